//! The log line carries what `meridian replay` needs: the component's own log, decided again
//! under the policy that wrote it, changes nothing; under a changed policy, exactly the
//! requests the change concerns move.

use super::*;
use crate::replay::Replay;

/// A weighted spread (seeded by the conversation), a header rule, a tools rule and a
/// personal-data refusal: every input the log must keep decides something here.
const RULES: &str = "[[rules]]\nid = \"spread\"\nprefer = { weights = { alpha = 1, beta = 1 } }\n\
    [[rules]]\nid = \"red-team\"\nwhen = { header = { \"x-team\" = \"red\" } }\nrequire = { providers = [\"beta\"] }\n\
    [[rules]]\nid = \"tools-beta\"\nwhen = { tools = true }\nrequire = { providers = [\"beta\"] }\n\
    [[rules]]\nid = \"no-email\"\nwhen = { pii = [\"email\"] }\nrefuse = true\n";

/// The change: clients in the EU are served in the EU.
const EU_RULE: &str = "[[rules]]\nid = \"eu-clients\"\nwhen = { client_jurisdiction = [\"eu\"] }\nrequire = { jurisdiction = [\"eu\"] }\n";

/// One request of the generated traffic, as the test knows it.
struct Sent {
    id: String,
    key: Option<&'static str>,
    country: Option<&'static str>,
    red: bool,
    tools: bool,
    email: bool,
    no_training: bool,
}

impl Sent {
    fn eu(&self) -> bool {
        matches!(self.country, Some("DE" | "FR"))
    }
}

/// 96 requests over callers, countries, the header, tools, personal data, a privacy flag and
/// streams; their log lines.
async fn traffic(p: &Policy) -> (Vec<Sent>, Vec<String>) {
    let t = Fake::new(vec![
        ("alpha", (0..200).map(|_| ok_json(0)).collect()),
        ("beta", (0..200).map(|_| ok_json(0)).collect()),
    ]);
    let (mut sent, mut lines) = (Vec::new(), Vec::new());
    for i in 0..96usize {
        let s = Sent {
            id: format!("req-{i}"),
            key: [Some("sk-acme"), None, Some("sk-acme"), Some("sk-eu")][i % 4],
            country: [Some("DE"), Some("US"), Some("FR"), None, Some("BR")][i % 5],
            red: i % 3 == 0,
            tools: i % 7 == 0,
            email: i % 11 == 0,
            no_training: i % 13 == 0,
        };
        let auth = s.key.map(|k| format!("Bearer {k}"));
        let mut headers = vec![JSON, ("x-request-id", s.id.as_str())];
        if let Some(a) = &auth {
            headers.push(("authorization", a.as_str()));
        }
        if let Some(c) = s.country {
            headers.push(("cf-ipcountry", c));
        }
        if s.red {
            headers.push(("x-team", "red"));
        }
        if s.no_training {
            headers.push(("x-meridian-privacy", "no-training"));
        }
        let text = if s.email {
            "write to ann@example.com"
        } else {
            "hi"
        };
        let mut body = serde_json::json!({
            "model": "chat-model",
            "user": format!("conversation-{}", i / 2),
            "stream": i % 2 == 1,
            "messages": [{"role": "user", "content": text}],
        });
        if s.tools {
            body["tools"] = serde_json::json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]);
        }
        let a = chat(p, &t, &headers, &body.to_string()).await;
        lines.push(a.record.log_line(1, t.now_ms()));
        sent.push(s);
    }
    (sent, lines)
}

fn first_of(line: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    v["facts"]["first"]["provider"].as_str().map(str::to_string)
}

#[tokio::test(start_paused = true)]
async fn the_components_own_log_replays_unchanged_under_its_policy() {
    let p = policy::load(&(policy_text("") + RULES), "api").unwrap();
    let (sent, lines) = traffic(&p).await;
    // The traffic is not trivial: both providers come first, and the policy refuses some.
    let firsts: Vec<Option<String>> = lines.iter().map(|l| first_of(l)).collect();
    assert!(firsts.iter().any(|f| f.as_deref() == Some("alpha")));
    assert!(firsts.iter().any(|f| f.as_deref() == Some("beta")));
    let refused = lines
        .iter()
        .filter(|l| l.contains(r#""refused_by":"policy""#));
    assert!(refused.count() >= sent.iter().filter(|s| s.email).count());
    // Nothing of the prompt is in the log.
    assert!(lines
        .iter()
        .all(|l| !l.contains("ann@example.com") && !l.contains("conversation-")));
    // A header a rule reads is kept as a digest, never its value, and still replays exactly.
    assert!(lines.iter().all(|l| !l.contains(r#""x-team":"red""#)));
    let red_digest = {
        use sha2::Digest as _;
        let d = sha2::Sha256::digest(b"red");
        format!(r#""x-team":"sha256:{}""#, hex::encode(&d[..16]))
    };
    assert!(lines.iter().any(|l| l.contains(&red_digest)));

    let mut r = Replay::new(&p);
    for l in &lines {
        r.line(l);
    }
    let report = r.finish();
    assert_eq!(report.lines, 96);
    assert_eq!(report.replayed, 96, "{:?}", report.skipped);
    assert_eq!(report.changed, 0, "{}", report.text());
    assert_eq!(report.unchanged, 96);
    assert!(report.caveats.is_empty(), "{:?}", report.caveats);
}

#[tokio::test(start_paused = true)]
async fn a_changed_policy_moves_exactly_the_requests_it_concerns() {
    let old = policy::load(&(policy_text("") + RULES), "api").unwrap();
    let new = policy::load(&(policy_text("") + RULES + EU_RULE), "api").unwrap();
    let (sent, lines) = traffic(&old).await;
    let mut r = Replay::new(&new);
    for l in &lines {
        r.line(l);
    }
    let report = r.finish();

    // The oracle: what the added rule does, from what the test sent and the old first choice.
    // Refused before (personal data, or no provider with no-training): refused the same.
    // An EU client routed to beta moves to alpha (DE), unless a rule needs beta: then nothing
    // is left, and it is refused.
    let (mut moved, mut now_refused, mut unchanged) = (Vec::new(), Vec::new(), 0u64);
    for (s, l) in sent.iter().zip(&lines) {
        let first = first_of(l);
        match first.as_deref() {
            Some("beta") if s.eu() && (s.red || s.tools) => now_refused.push(s.id.clone()),
            Some("beta") if s.eu() => moved.push(s.id.clone()),
            _ => unchanged += 1,
        }
    }
    assert!(!moved.is_empty() && !now_refused.is_empty());
    assert_eq!(report.unchanged, unchanged, "{}", report.text());
    assert_eq!(report.changed, (moved.len() + now_refused.len()) as u64);
    assert_eq!(report.provider_moves.len(), 1, "{}", report.text());
    let m = &report.provider_moves[0];
    assert_eq!(
        (m.from.as_str(), m.to.as_str(), m.bucket.requests),
        ("beta", "alpha", moved.len() as u64)
    );
    assert_eq!(m.bucket.examples, moved[..moved.len().min(3)]);
    let j = &report.jurisdiction_moves[0];
    assert_eq!(
        (j.from.as_str(), j.to.as_str(), j.bucket.requests),
        ("US", "DE", moved.len() as u64)
    );
    assert_eq!(report.now_refused.len(), 1, "{}", report.text());
    assert_eq!(
        report.now_refused[0].bucket.requests,
        now_refused.len() as u64
    );
    assert_eq!(
        report.now_refused[0].served_before,
        now_refused.len() as u64
    );
    assert!(report.now_served.is_empty() && report.refused_differently.is_empty());

    // Cost: every request was answered with 1 input and 2 output tokens. alpha costs $1 and $2
    // per million, beta has no prices: requests routed to beta before are unpriced; those moved
    // to alpha are still unpriced (no old price); the rest keep their cost.
    let priced_alpha = lines
        .iter()
        .filter(|l| first_of(l).as_deref() == Some("alpha") && l.contains(r#""cost_usd""#))
        .count() as f64;
    let c = &report.cost;
    assert!((c.old_usd - priced_alpha * 5e-6).abs() < 1e-12, "{c:?}");
    assert!((c.new_usd - c.old_usd).abs() < 1e-12, "{c:?}");
}

/// A route's fallback to another model of the same provider is priced at that model's prices
/// (issue 37, item 3): the log replayed under its own policy costs what was billed.
#[tokio::test(start_paused = true)]
async fn a_fallback_to_another_model_of_the_same_provider_is_priced_at_that_model() {
    let text = "version = 1\n[settings]\nallow_anonymous = true\n\
        [[providers]]\nid = \"p\"\nbase_url = \"http://p/v1\"\nlocation = \"DE\"\n\
        models = { broken = { id = \"up-broken\", input_price = 100.0, output_price = 100.0 }, fast = { id = \"up-fast\", input_price = 2.0, output_price = 4.0 } }\n\
        [[routes]]\nid = \"smart\"\nmodels = [\"broken\", \"fast\"]\n";
    let p = policy::load(text, "route-replay").unwrap();
    let t = Fake::new(vec![("p", vec![status(503, None), ok_json(0)])]);
    let a = call(
        &p,
        &t,
        "POST",
        "/v1/chat/completions",
        &[JSON],
        r#"{"model":"smart","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.record.served_model.as_deref(), Some("fast"));
    let line = a.record.log_line(1, 2);
    let billed = serde_json::from_str::<serde_json::Value>(&line).unwrap()["cost_usd"]
        .as_f64()
        .unwrap();
    // What the test's fixture bills: ok_json's usage at `fast`'s prices.
    let usage = a.record.usage.unwrap();
    let at_fast = (usage.prompt_tokens as f64 * 2.0 + usage.completion_tokens as f64 * 4.0) / 1e6;
    assert!((billed - at_fast).abs() < 1e-12, "{billed} {at_fast}");
    let mut r = Replay::new(&p);
    r.line(&line);
    let report = r.finish();
    assert_eq!(report.changed, 0);
    assert!(
        (report.cost.new_usd - at_fast).abs() < 1e-12,
        "{:?}",
        report.cost
    );
}

/// A guard in the US that the `eu-only` tenant's requests may not be sent, failing closed:
/// replayed, exactly the requests that tenant sent and were served are now refused with
/// `guardrail_not_allowed`.
#[tokio::test(start_paused = true)]
async fn a_fail_closed_guard_the_text_may_not_reach_refuses_those_requests_in_replay() {
    let old = policy::load(&(policy_text("") + RULES), "api").unwrap();
    let guard = "[[guards]]\nid = \"mod-us\"\nkind = \"moderation\"\nwire = \"openai_moderation\"\nurl = \"https://api.openai.com/v1\"\nlocation = \"US\"\nretention_days = 0\ntrains_on_inputs = false\n\
        [[rules]]\nid = \"moderated\"\n[[rules.guards]]\nguard = \"mod-us\"\n";
    let new = policy::load(&(policy_text("") + RULES + guard), "api").unwrap();
    let (sent, lines) = traffic(&old).await;
    let mut r = Replay::new(&new);
    for l in &lines {
        r.line(l);
    }
    let report = r.finish();
    // The oracle: the eu-only tenant's requests that were served before.
    let refused: Vec<&String> = sent
        .iter()
        .zip(&lines)
        .filter(|(s, l)| s.key == Some("sk-eu") && first_of(l).is_some())
        .map(|(s, _)| &s.id)
        .collect();
    assert!(!refused.is_empty());
    assert_eq!(report.changed, refused.len() as u64, "{}", report.text());
    assert_eq!(report.now_refused.len(), 1, "{}", report.text());
    assert_eq!(report.now_refused[0].bucket.requests, refused.len() as u64);
    assert!(
        report.text().contains("guardrail_not_allowed"),
        "{}",
        report.text()
    );
}

/// Where a provider keeps data is replayed apart from where it processes: a policy that says
/// beta keeps data in Ireland moves exactly the requests whose first choice was beta, as
/// storage moves (US → IE), and no jurisdiction moves.
#[tokio::test(start_paused = true)]
async fn a_provider_that_now_keeps_data_elsewhere_moves_its_requests_storage() {
    let old = policy::load(&(policy_text("") + RULES), "api").unwrap();
    let text = policy_text("").replace(
        "location = \"US\"\nkey_secret = \"beta_key\"",
        "location = \"US\"\nstorage = \"IE\"\ntransfer_safeguard = \"dpf\"\nkey_secret = \"beta_key\"",
    );
    assert!(text.contains("storage = \"IE\""));
    let new = policy::load(&(text + RULES), "api").unwrap();
    let (_, lines) = traffic(&old).await;
    let on_beta: u64 = lines
        .iter()
        .filter(|l| first_of(l).as_deref() == Some("beta"))
        .count() as u64;
    assert!(on_beta > 0);
    let mut r = Replay::new(&new);
    for l in &lines {
        r.line(l);
    }
    let report = r.finish();
    assert_eq!(report.changed, on_beta, "{}", report.text());
    assert!(report.jurisdiction_moves.is_empty() && report.provider_moves.is_empty());
    assert_eq!(report.storage_moves.len(), 1, "{}", report.text());
    let m = &report.storage_moves[0];
    assert_eq!(
        (m.from.as_str(), m.to.as_str(), m.bucket.requests),
        ("US", "IE", on_beta)
    );
    assert!(report
        .text()
        .contains("storage moves (where the first choice keeps data):"));
    // The new policy's own log replays unchanged under it: its lines carry the storage.
    let (_, lines) = traffic(&new).await;
    assert!(lines.iter().any(|l| l.contains(r#""storage":"IE""#)));
    let mut r = Replay::new(&new);
    for l in &lines {
        r.line(l);
    }
    assert_eq!(r.finish().changed, 0);
}
