//! End to end: guards through the built component in meridian-host, against recording mock
//! guards, with the official OpenAI SDK as the client (tests/clients/guards_sdk.py).

mod support;

use support::mock::{chunk, Recorded, SseEnd};
use support::{clients, policy_for, Meridian, Mock, Script};

/// A classifier (`http_classifier` wire) that judges what it is sent: `INJECTION` when the text
/// holds `FORBIDDEN`.
fn classify(rec: &Recorded) -> Script {
    let text = rec.body["input"].as_str().unwrap_or_default();
    let score = if text.contains("FORBIDDEN") {
        0.97
    } else {
        0.02
    };
    Script::Json {
        status: 200,
        body: serde_json::json!([{"label": "INJECTION", "score": score}, {"label": "BENIGN", "score": 1.0 - score}])
            .to_string(),
        headers: vec![("content-type".into(), "application/json".into())],
    }
}

#[tokio::test]
async fn guards_obey_residency_refuse_for_the_sdk_and_cut_streams_at_the_window() {
    // The provider: a whole answer, or a stream of nine 400-character events whose eighth holds
    // the word the output guard refuses (windows of 1,024 characters close after the 3rd, 6th
    // and 9th event).
    let provider = Mock::with(|rec, _| {
        if rec.body["stream"] == true {
            let events = (1..=9)
                .map(|i| {
                    let mut s = format!("[event {i}]");
                    if i == 8 {
                        s.push_str(" FORBIDDEN ");
                    }
                    let pad = "x".repeat(400 - s.len());
                    chunk(&(s + &pad))
                })
                .collect();
            Script::Sse {
                events,
                gap_ms: 5,
                end: SseEnd::Done,
            }
        } else {
            Script::ok("a clean answer")
        }
    })
    .await;
    let us_guard = Mock::start(Script::ok("never asked")).await;
    let de_guard = Mock::with(|rec, _| classify(rec)).await;
    let guards = format!(
        "[[guards]]\nid = \"moderation-us\"\nkind = \"moderation\"\nwire = \"openai_moderation\"\nurl = \"{}/v1\"\nlocation = \"US\"\nretention_days = 0\ntrains_on_inputs = false\n\n\
         [[guards]]\nid = \"classifier-de\"\nkind = \"classifier\"\nwire = \"http_classifier\"\nurl = \"{}/classify\"\nlocation = \"DE\"\nlabels = [\"INJECTION\"]\nretention_days = 0\ntrains_on_inputs = false\n\n\
         [[rules]]\nid = \"eu\"\nwhen = {{ client_jurisdiction = \"eu\" }}\nrequire = {{ jurisdiction = \"eu\" }}\n\
         [[rules.guards]]\nguard = \"moderation-us\"\nfail = \"open\"\n\
         [[rules.guards]]\nguard = \"classifier-de\"\n\
         [[rules.guards]]\nguard = \"classifier-de\"\non = \"output\"\n",
        us_guard.url(),
        de_guard.url()
    );
    let policy = policy_for(&[("eu-provider", &provider, "DE", "")], &guards);
    let m = Meridian::with_policy(&policy, &[]).await;
    let out = clients::run_capture(
        &clients::python(),
        "guards_sdk.py",
        &[("MERIDIAN_URL", m.url.as_str())],
    )
    .await;
    let seen: serde_json::Value = serde_json::from_str(out.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {out}"));
    let seen = seen["seen"].as_str().unwrap();
    // The SDK got the two cleared windows and nothing of the third.
    for i in 1..=6 {
        assert!(
            seen.contains(&format!("[event {i}]")),
            "event {i} missing: {seen}"
        );
    }
    for i in 7..=9 {
        assert!(
            !seen.contains(&format!("[event {i}]")),
            "event {i} reached the SDK"
        );
    }
    assert!(!seen.contains("FORBIDDEN"));

    // An EU client's prompt never reached the US guard; the German one judged every request.
    assert!(us_guard.requests().is_empty(), "{:?}", us_guard.requests());
    let asked: Vec<String> = de_guard
        .requests()
        .iter()
        .map(|r| r.body["input"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        asked
            .iter()
            .any(|t| t.contains("Please do the FORBIDDEN thing.")),
        "{asked:?}"
    );
    assert!(asked.iter().any(|t| t == "a clean answer"), "{asked:?}");
    // The refused request's attempt: stopped or never answered, and the provider's stream was
    // judged in its three windows.
    let logs = m.logs();
    let refused = logs
        .iter()
        .find(|l| l["status"] == 422)
        .expect("the refusal's line");
    assert_eq!(refused["guards"][0]["guard"], "moderation-us");
    assert_eq!(refused["guards"][0]["outcome"], "skipped");
    assert_eq!(refused["refused_by"], "guard");
    let cut = logs
        .iter()
        .find(|l| l["stream_outcome"] == "guardrail_refused")
        .expect("the cut stream's line");
    let verdicts: Vec<&str> = cut["guards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(verdicts, ["skipped", "passed", "refused"], "{cut}");
    // Never the text, in any line.
    for l in &logs {
        assert!(!l.to_string().contains("FORBIDDEN"), "{l}");
    }
}
