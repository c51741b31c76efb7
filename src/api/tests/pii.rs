//! Personal data: routed, redacted, restored (whole and streamed) or refused.

use super::*;

/// Personal-data rules over the two providers: cards refused, IBANs only to `alpha` (DE),
/// emails redacted and restored.
const PII_RULES: &str = "[[rules]]\nid = \"no-cards\"\nwhen = { pii = [\"card\"] }\nrefuse = true\n\
    [[rules]]\nid = \"iban-in-de\"\nwhen = { pii = [\"iban\"] }\nrequire = { providers = [\"alpha\"] }\n\
    [[rules]]\nid = \"emails-redacted\"\nredact = [\"email\"]\nrestore = true\n";

fn pii_policy() -> Policy {
    policy::load(&(policy_text("") + PII_RULES), "api").unwrap_or_else(|e| panic!("{e}"))
}

fn prompt(text: &str, extra: &str) -> String {
    serde_json::json!({"model": "chat-model", "messages": [{"role": "user", "content": text}]})
        .to_string()
        .trim_end_matches('}')
        .to_string()
        + extra
        + "}"
}

fn answering(content: &str) -> Step {
    Step::Answer {
        after_ms: 0,
        status: 200,
        headers: vec![],
        chunks: vec![(
            0,
            Ok(serde_json::json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]})
                .to_string()
                .into_bytes()),
        )],
    }
}

#[tokio::test(start_paused = true)]
async fn personal_data_is_routed_redacted_restored_or_refused() {
    let p = pii_policy();
    let h = [
        JSON,
        ("authorization", "Bearer sk-acme"),
        ("cf-ipcountry", "US"),
    ];

    // An email: redacted before forwarding, restored in the answer, counted in the header.
    let t = Fake::new(vec![(
        "alpha",
        vec![answering("Sure, I wrote to [EMAIL_1].")],
    )]);
    let a = chat(&p, &t, &h, &prompt("mail jane@example.com please", "")).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let sent = String::from_utf8(t.requests.borrow()[0].body.clone()).unwrap();
    assert!(sent.contains("mail [EMAIL_1] please"), "{sent}");
    assert!(!sent.contains("jane@"), "{sent}");
    assert_eq!(
        a.json()["choices"][0]["message"]["content"],
        "Sure, I wrote to jane@example.com."
    );
    assert_eq!(a.header("x-meridian-pii"), Some("email=1; redacted"));
    let line = a.record.log_line(1, 2);
    assert!(
        line.contains(
            r#""pii":{"found":{"email":1},"action":"redacted","redacted":1,"restored":true}"#
        ),
        "{line}"
    );
    assert!(!line.contains("jane@"), "{line}");

    // An IBAN: only alpha may serve (the US client could otherwise use beta first).
    let t = Fake::new(vec![("alpha", vec![ok_json(0)])]);
    let a = chat(
        &p,
        &t,
        &h,
        &prompt(
            "pay to DE89370400440532013000",
            r#","provider":{"order":["beta"]}"#,
        ),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(t.sent_to(), ["alpha"]);
    assert_eq!(a.header("x-meridian-pii"), Some("iban=1; routed"));
    assert!(a.header("x-meridian-rules").unwrap().contains("iban-in-de"));

    // A card: 422 before any attempt, the kind named, never the value.
    let t = no_script();
    let a = chat(&p, &t, &h, &prompt("charge 4111 1111 1111 1111", "")).await;
    assert_eq!(a.status, 422, "{}", a.text());
    assert_eq!(a.code(), "personal_data_refused");
    assert!(a.text().contains("(card; rule `no-cards`)"), "{}", a.text());
    // The value in any spacing; longer than a bare "4111", which a random
    // request id could hold.
    assert!(!a.text().contains("4111 1111"), "{}", a.text());
    assert!(!a.text().contains("41111111"), "{}", a.text());
    assert_eq!(a.header("x-meridian-pii"), Some("card=1; refused"));
    assert!(t.sent_to().is_empty());

    // Nothing found: said so.
    let t = Fake::new(vec![("beta", vec![ok_json(0)])]);
    let a = chat(&p, &t, &h, &prompt("hello", "")).await;
    assert_eq!(a.header("x-meridian-pii"), Some("none"));

    // A policy without personal-data rules scans nothing and says nothing.
    let plain = load("");
    let t = Fake::new(vec![("beta", vec![ok_json(0)])]);
    let a = chat(&plain, &t, &h, &prompt("mail jane@example.com", "")).await;
    assert_eq!(a.header("x-meridian-pii"), None);
    assert!(String::from_utf8_lossy(&t.requests.borrow()[0].body).contains("jane@example.com"));
}

/// The acme tenant's streamed chat from the US, mailing jane@example.com, that `alpha` answers
/// with `step`.
async fn restored_stream(p: &Policy, step: Step) -> Answer {
    let t = Fake::new(vec![("alpha", vec![step])]);
    let h = [
        JSON,
        ("authorization", "Bearer sk-acme"),
        ("cf-ipcountry", "US"),
    ];
    let body = prompt(
        "mail jane@example.com",
        r#","stream":true,"provider":{"order":["alpha"]}"#,
    );
    chat(p, &t, &h, &body).await
}

#[tokio::test(start_paused = true)]
async fn a_restored_stream_gives_back_placeholders_split_across_chunks() {
    let p = pii_policy();
    let ev = |s: &str| {
        format!(
            "data: {}\n\n",
            serde_json::json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                "choices": [{"index": 0, "delta": {"content": s}, "finish_reason": null}]})
        )
    };
    let fin = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n";
    // The placeholder arrives in three events, and the SSE bytes are split mid-line too.
    let body = format!(
        "{}{}{}{fin}{DONE}",
        ev("Wrote to [EMA"),
        ev("IL_"),
        ev("1] and [EMAIL_1].")
    );
    let (a1, a2) = body.split_at(body.len() / 2);
    let a = restored_stream(&p, sse(&[(0, a1), (3, a2)])).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let text = a.text();
    let mut content = String::new();
    for line in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if line == "[DONE]" {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        content.push_str(v["choices"][0]["delta"]["content"].as_str().unwrap_or(""));
    }
    assert_eq!(content, "Wrote to jane@example.com and jane@example.com.");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(!text.contains("[EMAIL"), "{text}");
    assert_eq!(a.record.stream_outcome, Some("done"));
}

/// Under `stream_events = "framed"`, a stream whose personal data is put back is still read
/// event by event: an event that is not JSON ends it, as under the default.
#[tokio::test(start_paused = true)]
async fn a_restored_stream_checks_every_event_under_framed_stream_events() {
    let p = policy::load(&framed(policy_text("") + PII_RULES), "api").unwrap();
    assert_eq!(p.settings.stream_events, policy::StreamEvents::Framed);
    let ev = format!(
        "data: {}\n\n",
        serde_json::json!({"choices": [{"index": 0, "delta": {"content": "Wrote to [EMAIL_1]."}}]})
    );
    let garbled = garbled_event("[EMAIL_1]");
    let a = restored_stream(&p, sse(&[(0, &ev), (0, &garbled), (0, DONE)])).await;
    let text = a.text();
    assert!(text.contains("Wrote to jane@example.com."), "{text}");
    assert_eq!(a.record.stream_outcome, Some("upstream_stream_malformed"));
    assert!(
        !text.contains("[DONE]") && !text.contains("[EMAIL_1]"),
        "{text}"
    );
}
