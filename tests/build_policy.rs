//! A deployment's own policy, built in: `MERIDIAN_POLICY=… cargo build --target wasm32-wasip2
//! --release` (what `MERIDIAN_POLICY=… spin build` runs). The component built that way serves
//! that policy with nothing configured, and an invalid policy fails the build with its errors.
//!
//! It builds into its own target directory (target/custom-policy) so the artifact the other
//! tests run is untouched; the first build there compiles the dependencies once.

mod support;

use std::path::PathBuf;
use std::process::Output;

use support::{json_of, list_ids, Meridian};

async fn build_with(policy: &str) -> (Output, PathBuf) {
    support::meridian::build_component("custom-policy", &[("MERIDIAN_POLICY", policy)]).await
}

#[tokio::test]
async fn a_policy_chosen_at_build_time_is_the_one_served_and_an_invalid_one_fails_the_build() {
    // The example with a key of this test's own for its tenant (the example ships only the hash
    // of a key nobody knows), written outside the source tree.
    let text = std::fs::read_to_string(
        support::meridian::root().join("policies/examples/eu-residency.toml"),
    )
    .unwrap();
    let at = text
        .find("id = \"app\"\nkeys = [")
        .expect("the example's tenant");
    let start = at + text[at..].find("keys = [").unwrap();
    let end = start + text[start..].find(']').unwrap() + 1;
    let hash = hex::encode(meridian::policy::hash_key("sk-test-build-key"));
    let text = format!(
        "{}keys = [\"sha256:{hash}\"]{}",
        &text[..start],
        &text[end..]
    );
    let dir = support::meridian::root().join("target");
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("eu-residency-with-test-key.toml");
    std::fs::write(&copy, text).unwrap();
    let (out, wasm) = build_with(copy.to_str().unwrap()).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = Meridian::other_component(&wasm).await;
    let c = reqwest::Client::new();

    // The models are eu-residency's, not the default policy's.
    let key = "Bearer sk-test-build-key";
    let models = json_of(c.get(m.at("/v1/models")).header("authorization", key)).await;
    let mut ids = list_ids(&models);
    ids.sort();
    // The client's country is unknown here, so the policy keeps it in the EU: the US-only
    // `gpt-4o` is not listed (and a request for it is refused below).
    assert_eq!(ids, ["gpt-4o-mini", "mistral-small"]);

    // Its rules apply: with no trusted country header the client is kept in the EU, and only a
    // US provider serves `gpt-4o`, so the request is refused before anything is sent.
    let r = c
        .post(m.at("/v1/chat/completions"))
        .header("authorization", key)
        .json(&serde_json::json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let header = |n: &str| {
        r.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        header("x-meridian-policy").starts_with("eu-residency@"),
        "{}",
        header("x-meridian-policy")
    );
    assert_eq!(header("x-meridian-rules"), "unknown-country-fails-closed");
    assert_eq!(r.status(), 451);
    drop(m);

    // An invalid policy stops the build with every error and its position.
    let (out, _) = build_with("tests/invalid/typos.toml").await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("tests/invalid/typos.toml:4:2: error: unknown key `setings` at the top level")
            && err.contains("did you mean `settings`?"),
        "{err}"
    );
}
