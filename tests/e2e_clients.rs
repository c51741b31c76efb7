//! The clients people really use, against the built component in the real runtime: the official
//! OpenAI Python and npm SDKs, and a page in headless Chromium on another origin. The scripts live
//! in tests/clients/; ./scripts/setup installs what they need (venv, node_modules, chromium).

mod support;

use support::mock::{chunk, SseEnd};
use support::{json_of, policy_for, Meridian, Mock, Recorded, Script};

const APP_KEY: &str = "sk-app-test-key";
const BROWSER_KEY: &str = "pk-web-test-key";
const PROVIDER_KEY: &str = "sk-provider-only";
/// [0.5, -0.25, 1.0] as little-endian float32, base64: what OpenAI sends for encoding_format=base64.
const EMBEDDING_B64: &str = "AAAAPwAAgL4AAIA/";

use support::clients::{self, python};

/// Answers like an OpenAI-compatible provider: chat (stream or not) and embeddings. A stream
/// ends as `end` says.
fn openai_like(rec: &Recorded, end: SseEnd) -> Script {
    if rec.path.ends_with("/embeddings") {
        let embedding = if rec.body["encoding_format"] == "base64" {
            serde_json::json!(EMBEDDING_B64)
        } else {
            serde_json::json!([0.5, -0.25, 1.0])
        };
        let body = serde_json::json!({
            "object": "list", "model": "embed-model",
            "data": [{"object": "embedding", "index": 0, "embedding": embedding}],
            "usage": {"prompt_tokens": 1, "total_tokens": 1}
        });
        return Script::Json {
            status: 200,
            body: body.to_string(),
            headers: vec![],
        };
    }
    if rec.body["stream"] == true {
        return Script::Sse {
            events: ["Hello", " from", " a", " stream"]
                .iter()
                .map(|w| chunk(w))
                .collect(),
            gap_ms: 150,
            end,
        };
    }
    Script::ok("Hello from the mock")
}

/// A port for a server the test's script starts itself. Taken below the system's ephemeral
/// range (32768 and up here), so that between this check and the script's `listen` the system
/// cannot hand it to another test's socket (a port from `bind(0)` could be, and was: EADDRINUSE).
fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let start = 20_000 + (std::process::id() % 6_000) as u16;
    for _ in 0..6_000 {
        let port = start + NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 6_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between 20000 and 32000");
}

fn policy(up: &Mock, page_origin: &str) -> String {
    let hash = |k: &str| hex::encode(meridian::policy::hash_key(k));
    policy_for(
        &[("alpha", up, "DE", "key_secret = \"openai_api_key\"")],
        &format!(
            "[[tenants]]\nid = \"app\"\nkeys = [\"sha256:{}\"]\n\n\
             [[tenants]]\nid = \"web\"\nkeys = [\"sha256:{}\"]\norigins = [\"{page_origin}\"]\nmodels = [\"chat-*\"]\nmax_tokens = 256\n",
            hash(APP_KEY),
            hash(BROWSER_KEY)
        ),
    )
}

async fn start(page_origin: &str) -> (Mock, Meridian) {
    start_ending(page_origin, SseEnd::Done).await
}

async fn start_ending(page_origin: &str, end: SseEnd) -> (Mock, Meridian) {
    let up = Mock::with(move |rec: &Recorded, _| openai_like(rec, end.clone())).await;
    let m = Meridian::with_policy(
        &policy(&up, page_origin),
        &[("SPIN_VARIABLE_OPENAI_API_KEY", PROVIDER_KEY)],
    )
    .await;
    (up, m)
}

/// The upstream saw the provider's key on every request, never a client's.
fn assert_keys(up: &Mock) {
    let seen = up.requests();
    assert!(!seen.is_empty());
    for r in &seen {
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {PROVIDER_KEY}").as_str())
        );
        assert!(r
            .headers
            .iter()
            .all(|(_, v)| !v.contains(APP_KEY) && !v.contains(BROWSER_KEY)));
    }
}

/// An SDK script's whole run: chat ×2 (one streamed) and embeddings ×2 reach the upstream with
/// the provider's key; the unknown model and the wrong key never leave Meridian.
async fn sdk_suite(program: &str, script: &str) {
    let (up, m) = start("http://127.0.0.1:1").await;
    let env = [
        ("MERIDIAN_URL", m.url.clone()),
        ("MERIDIAN_KEY", APP_KEY.to_string()),
    ];
    clients::run(program, script, &env).await;
    assert_keys(&up);
    assert_eq!(up.requests().len(), 4);
}

#[tokio::test]
async fn official_python_sdk() {
    sdk_suite(&python(), "sdk_test.py").await;
}

#[tokio::test]
async fn official_npm_sdk() {
    sdk_suite("node", "sdk.test.mjs").await;
}

#[tokio::test]
async fn browser_streams_from_an_allowed_origin_and_another_origin_is_refused() {
    let (page_port, other_port) = (free_port(), free_port());
    // The stream holds after its first chunk until the page has shown it and the script calls
    // RELEASE_URL: "rendered before the end" does not depend on how fast a loaded machine is.
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let (up, m) = start_ending(
        &format!("http://127.0.0.1:{page_port}"),
        SseEnd::HoldAfterFirst(release.clone()),
    )
    .await;
    let gate = Mock::with(move |_: &Recorded, _| {
        release.notify_one();
        Script::ok("released")
    })
    .await;
    clients::run(
        "node",
        "browser.mjs",
        &[
            ("MERIDIAN_URL", m.url.clone()),
            ("RELEASE_URL", gate.url()),
            ("BROWSER_KEY", BROWSER_KEY.into()),
            ("PAGE_PORT", page_port.to_string()),
            ("OTHER_PORT", other_port.to_string()),
        ],
    )
    .await;
    assert_keys(&up);
    let seen = up.requests();
    assert_eq!(
        seen.len(),
        1,
        "only the allowed page's request reached the upstream"
    );
    assert_eq!(
        seen[0].body["max_tokens"], 256,
        "the browser key's cap was applied"
    );
}

#[tokio::test]
async fn browser_keys_carry_a_tighter_policy() {
    let origin = "http://127.0.0.1:4321";
    let (up, m) = start(origin).await;
    let c = reqwest::Client::new();
    let post = |body: serde_json::Value, origin: Option<&str>| {
        let mut rb = c
            .post(m.at("/v1/chat/completions"))
            .bearer_auth(BROWSER_KEY)
            .json(&body);
        if let Some(o) = origin {
            rb = rb.header("origin", o);
        }
        rb.send()
    };
    let chat = |extra: serde_json::Value| {
        let mut b = serde_json::json!({"model": "chat-model", "messages": [{"role": "user", "content": "x"}]});
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        b
    };

    // Above the cap: refused, and the error is readable by the page (CORS headers on errors).
    let r = post(chat(serde_json::json!({"max_tokens": 5000})), Some(origin))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["access-control-allow-origin"], origin);
    let e: serde_json::Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "max_tokens_above_limit");

    // A model outside the key's globs: refused as out of the tenant's scope.
    let r = post(
        serde_json::json!({"model": "embed-model", "messages": [{"role": "user", "content": "x"}]}),
        Some(origin),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 403, "{:?}", r.text().await);

    // No Origin at all (a script outside a browser with the publishable key): refused.
    let r = post(chat(serde_json::json!({})), None).await.unwrap();
    assert_eq!(r.status(), 403);
    let e: serde_json::Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "origin_required");

    // The models list shows only what the key may use.
    let v: serde_json::Value = json_of(
        c.get(m.at("/v1/models"))
            .bearer_auth(BROWSER_KEY)
            .header("origin", origin),
    )
    .await;
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
    assert_eq!(v["data"][0]["id"], "chat-model");

    // Within the cap: forwarded with the caller's value.
    let r = post(chat(serde_json::json!({"max_tokens": 100})), Some(origin))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = up.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body["max_tokens"], 100);
}
