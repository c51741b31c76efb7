//! End to end: personal data in prompts through the built component in meridian-host, against
//! mock upstreams that record exactly what they received.

mod support;

use std::time::Duration;

use futures::StreamExt;
use support::mock::SseEnd;
use support::{policy_for, Meridian, Mock, Script};

const RULES: &str = "[[rules]]\nid = \"no-cards\"\nwhen = { pii = [\"card\"] }\nrefuse = true\n\
[[rules]]\nid = \"bank-data-self-hosted\"\nwhen = { pii = [\"iban\"] }\nrequire = { self_hosted = true }\n\
[[rules]]\nid = \"contact-redacted\"\nredact = [\"email\", \"phone\"]\nrestore = true\n";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

fn chat(text: &str, stream: bool) -> serde_json::Value {
    serde_json::json!({"model": "chat-model", "stream": stream,
        "messages": [{"role": "user", "content": text}]})
}

fn event(content: &str) -> String {
    serde_json::json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]})
    .to_string()
}

#[tokio::test]
async fn personal_data_is_routed_redacted_restored_and_refused_in_the_runtime() {
    // The cloud provider echoes what it got back as its answer: placeholders come back to
    // Meridian exactly as the upstream saw them. Streams echo them split across events.
    let cloud = Mock::with(|rec, _| {
        let got = rec.body["messages"][0]["content"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if rec.body["stream"] == true {
            let cut = got.find('[').map_or(got.len(), |i| i + 4);
            let (a, b) = got.split_at(cut.min(got.len()));
            Script::Sse {
                events: vec![event("You said: "), event(a), event(b)],
                gap_ms: 5,
                end: SseEnd::Done,
            }
        } else {
            Script::ok(&format!("You said: {got}"))
        }
    })
    .await;
    let local = Mock::start(Script::ok("handled on premises")).await;
    let policy = policy_for(
        &[
            ("cloud", &cloud, "US", ""),
            ("local", &local, "DE", "self_hosted = true"),
        ],
        RULES,
    );
    let m = Meridian::with_policy(&policy, &[]).await;
    let url = m.at("/v1/chat/completions");

    // An IBAN goes to the self-hosted engine only.
    let r = client()
        .post(&url)
        .json(&chat(
            "Transfer to DE89 3704 0044 0532 0130 00 today",
            false,
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-meridian-provider"], "local");
    assert_eq!(r.headers()["x-meridian-pii"], "iban=1; routed");
    assert!(
        cloud.requests().is_empty(),
        "the IBAN never reached the cloud provider"
    );
    assert_eq!(local.requests().len(), 1);

    // An email and a phone number reach the upstream as placeholders; the client gets the
    // originals back.
    let said = "Mail jane.doe@example.com or call +49 30 12345678, again jane.doe@example.com";
    let r = client()
        .post(&url)
        .json(&chat(said, false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-meridian-provider"], "cloud");
    assert_eq!(r.headers()["x-meridian-pii"], "email=2, phone=1; redacted");
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        format!("You said: {said}")
    );
    let upstream = cloud.requests().pop().unwrap();
    let sent = upstream.body["messages"][0]["content"].as_str().unwrap();
    assert_eq!(sent, "Mail [EMAIL_1] or call [PHONE_1], again [EMAIL_1]");
    assert!(!upstream.body.to_string().contains("jane.doe"));
    let line = m.log_for(&id).await;
    assert_eq!(
        line["pii"],
        serde_json::json!({"found": {"email": 2, "phone": 1}, "action": "redacted", "redacted": 3, "restored": true})
    );

    // A stream whose placeholder arrives split across events is restored for the client.
    let r = client()
        .post(&url)
        .json(&chat("Reply to jane.doe@example.com", true))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut body = Vec::new();
    let mut s = r.bytes_stream();
    while let Some(c) = s.next().await {
        body.extend_from_slice(&c.unwrap());
    }
    let text = String::from_utf8(body).unwrap();
    let mut content = String::new();
    for data in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if data != "[DONE]" {
            let v: serde_json::Value = serde_json::from_str(data).unwrap();
            content.push_str(v["choices"][0]["delta"]["content"].as_str().unwrap_or(""));
        }
    }
    assert_eq!(content, "You said: Reply to jane.doe@example.com");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let upstream = cloud.requests().pop().unwrap();
    assert_eq!(
        upstream.body["messages"][0]["content"],
        "Reply to [EMAIL_1]"
    );

    // A card number is refused before any upstream is called.
    let before = cloud.requests().len() + local.requests().len();
    let r = client()
        .post(&url)
        .json(&chat("Charge 4111 1111 1111 1111 now", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(r.headers()["x-meridian-pii"], "card=1; refused");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "personal_data_refused");
    assert!(!leaks(&v.to_string()), "{v}");
    assert_eq!(cloud.requests().len() + local.requests().len(), before);

    // No value appears in any log line.
    for l in m.logs() {
        let s = l.to_string();
        assert!(!leaks(&s), "a value in the log: {s}");
    }
}

/// Whether `text` holds any personal value this test sends, spaced as sent or
/// run together. Long enough that a random trace id, request id or timestamp
/// cannot hold one by chance (a bare "4111" once did: a trace id's hex).
fn leaks(text: &str) -> bool {
    [
        "jane.doe",
        "DE89 3704",
        "DE893704",
        "4111 1111",
        "41111111",
        "30 12345678",
        "3012345678",
    ]
    .iter()
    .any(|value| text.contains(value))
}
