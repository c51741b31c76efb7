//! The log the built component writes (through meridian-host, from stdout), replayed with the
//! code `meridian replay` runs: under the policy that wrote it nothing changes; under the same
//! policy with a residency rule added, exactly the EU clients' requests that went to the US
//! move, and nothing else.

mod support;

use meridian::replay::Replay;
use support::{policy_for, Meridian, Mock, Script};

#[tokio::test]
async fn the_components_log_replays_unchanged_and_a_residency_rule_moves_only_eu_clients() {
    let (us, eu) = (
        Mock::start(Script::ok("x")).await,
        Mock::start(Script::ok("x")).await,
    );
    // A weighted spread seeded by the conversation: both providers come first for someone.
    let base = policy_for(
        &[("usa", &us, "US", ""), ("eur", &eu, "DE", "")],
        "[[rules]]\nid = \"spread\"\nprefer = { weights = { usa = 1, eur = 1 } }\n",
    );
    let m = Meridian::with_policy(&base, &[]).await;
    let countries = ["FR", "US", "DE", "BR"];
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .unwrap();
    let mut lines = Vec::new();
    for i in 0..24 {
        let id = format!("replay-{i}");
        let r = http
            .post(m.at("/v1/chat/completions"))
            .header("cf-ipcountry", countries[i % 4])
            .header("x-request-id", &id)
            .json(&serde_json::json!({
                "model": "chat-model",
                "user": format!("conversation-{}", i / 2),
                "messages": [{"role": "user", "content": "hi"}],
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        lines.push(m.log_for(&id).await);
    }
    let first =
        |l: &serde_json::Value| l["facts"]["first"]["provider"].as_str().map(str::to_string);
    assert!(lines.iter().any(|l| first(l).as_deref() == Some("usa")));
    assert!(lines.iter().any(|l| first(l).as_deref() == Some("eur")));
    assert!(lines
        .iter()
        .all(|l| !l.to_string().contains("conversation-")));

    let replay = |policy: &str| {
        let p = meridian::policy::load(policy, "e2e").unwrap();
        let mut r = Replay::new(&p);
        for l in &lines {
            r.line(&l.to_string());
        }
        r.finish()
    };
    let same = replay(&base);
    assert_eq!((same.replayed, same.changed), (24, 0), "{}", same.text());

    let eu_rule = "[[rules]]\nid = \"eu-stays\"\nwhen = { client_jurisdiction = [\"eu\"] }\nrequire = { jurisdiction = [\"eu\"] }\n";
    let changed = replay(&(base.clone() + eu_rule));
    // The oracle: EU clients (FR, DE) whose first choice was usa; nobody else.
    let moved: Vec<String> = lines
        .iter()
        .filter(|l| {
            matches!(l["country"].as_str(), Some("FR" | "DE")) && first(l).as_deref() == Some("usa")
        })
        .map(|l| l["request_id"].as_str().unwrap().to_string())
        .collect();
    assert!(!moved.is_empty());
    assert_eq!(changed.changed, moved.len() as u64, "{}", changed.text());
    let mv = &changed.provider_moves[0];
    assert_eq!(
        (mv.from.as_str(), mv.to.as_str(), mv.bucket.requests),
        ("usa", "eur", moved.len() as u64)
    );
    assert_eq!(mv.bucket.examples, moved[..moved.len().min(3)]);
    // Both providers answered at $1/$2 per million and usage 10 + 20 tokens: the cost is the same.
    assert_eq!(changed.cost.priced, 24);
    assert!((changed.cost.old_usd - changed.cost.new_usd).abs() < 1e-12);
    assert!(
        (changed.cost.old_usd - 24.0 * 50e-6).abs() < 1e-12,
        "{:?}",
        changed.cost
    );
}
