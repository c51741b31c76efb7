//! End to end, with faults: what the client sees (status, body or SSE events) and the audit
//! headers, for every way an upstream fails.

mod support;

use std::time::Duration;

use support::mock::{chunk, SseEnd};
use support::{policy_for, Meridian, Mock, Script};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

fn h(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

const PLAN: &str = "[settings.plan]\nattempt_timeout_ms = 1500\nfirst_byte_timeout_ms = 1500\nidle_timeout_ms = 1500\ndeadline_ms = 20000\n";

async fn two(a: Script, b: Script, plan: &str) -> (Mock, Mock, Meridian) {
    let (ma, mb) = (Mock::start(a).await, Mock::start(b).await);
    let policy = policy_for(&[("first", &ma, "DE", ""), ("second", &mb, "FR", "")], "");
    let policy = policy.replace(
        "max_body_bytes = 4096\n",
        &format!(
            "max_body_bytes = 4096\n{}",
            plan.replace("[settings.plan]\n", "\n[settings.plan]\n")
        ),
    );
    // [settings.plan] must follow [settings]; policy_for puts [settings] first.
    let m = Meridian::with_policy(&policy, &[]).await;
    (ma, mb, m)
}

async fn chat(m: &Meridian, stream: bool, rid: &str) -> reqwest::Response {
    client()
        .post(m.at("/v1/chat/completions"))
        .header("x-request-id", rid)
        .json(&serde_json::json!({"model": "chat-model", "stream": stream, "messages": []}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn status_429_with_retry_after_500_and_503_fall_back_to_the_next_provider() {
    for (script, label) in [
        (
            Script::Json {
                status: 429,
                body: "{}".into(),
                headers: vec![("retry-after".into(), "30".into())],
            },
            "status 429",
        ),
        (Script::status(500), "status 500"),
        (Script::status(503), "status 503"),
    ] {
        let (a, b, m) = two(script, Script::ok("from second"), PLAN).await;
        let r = chat(&m, false, "f1").await;
        assert_eq!(r.status(), 200);
        assert_eq!(h(&r, "x-meridian-provider"), "second");
        assert_eq!(h(&r, "x-meridian-attempts"), "2");
        assert_eq!(h(&r, "x-meridian-failures"), format!("first={label}"));
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "from second");
        assert_eq!((a.requests().len(), b.requests().len()), (1, 1));
    }
}

#[tokio::test]
async fn a_400_is_passed_through_without_fallback() {
    let (_a, b, m) = two(Script::status(400), Script::ok("never"), PLAN).await;
    let r = chat(&m, false, "f400").await;
    assert_eq!(r.status(), 400);
    assert_eq!(h(&r, "x-meridian-provider"), "first");
    assert_eq!(b.requests().len(), 0);
}

#[tokio::test]
async fn refused_connections_fall_back() {
    let b = Mock::start(Script::ok("second")).await;
    let refused = Mock::refused_url().await;
    let policy = format!(
        "version = 1\n[settings]\nallow_anonymous = true\n[[providers]]\nid = \"gone\"\nbase_url = \"{refused}/v1\"\nlocation = \"US\"\nmodels = {{ \"chat-model\" = \"x\" }}\n[[providers]]\nid = \"second\"\nbase_url = \"{}/v1\"\nlocation = \"US\"\nmodels = {{ \"chat-model\" = \"y\" }}\n",
        b.url()
    );
    let m = Meridian::with_policy(&policy, &[]).await;
    let r = chat(&m, false, "fref").await;
    assert_eq!(r.status(), 200);
    assert!(
        h(&r, "x-meridian-failures").starts_with("gone=connect error"),
        "{}",
        h(&r, "x-meridian-failures")
    );
}

#[tokio::test]
async fn hanging_before_headers_times_out_and_falls_back() {
    let (_a, _b, m) = two(Script::Hang, Script::ok("second"), PLAN).await;
    let r = chat(&m, false, "fhang").await;
    assert_eq!(r.status(), 200);
    assert_eq!(h(&r, "x-meridian-failures"), "first=timeout (headers)");
}

#[tokio::test]
async fn when_every_provider_times_out_the_client_gets_504_listing_the_attempts() {
    let (_a, _b, m) = two(Script::Hang, Script::Hang, PLAN).await;
    let r = chat(&m, false, "fall").await;
    assert_eq!(r.status(), 504);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "upstream_timeout");
    let attempts = v["error"]["meridian"]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
}

#[tokio::test]
async fn a_delayed_first_byte_falls_back_before_anything_reaches_the_client() {
    // Headers at once, then nothing: longer than first_byte_timeout_ms = 1500.
    let (_a, _b, m) = two(
        held_first_byte(),
        Script::stream(&["from ", "second"]),
        PLAN,
    )
    .await;
    let r = chat(&m, true, "ffb").await;
    assert_eq!(r.status(), 200);
    assert_eq!(h(&r, "x-meridian-provider"), "second");
    assert_eq!(h(&r, "x-meridian-failures"), "first=timeout (first byte)");
    let text = r.text().await.unwrap();
    assert!(
        text.contains("second") && text.trim_end().ends_with("data: [DONE]"),
        "{text}"
    );
}

/// Answers with stream headers at once but holds the first event forever.
fn held_first_byte() -> Script {
    Script::Sse {
        events: vec![],
        gap_ms: 0,
        end: SseEnd::HoldAfterFirst(std::sync::Arc::new(tokio::sync::Notify::new())),
    }
}

#[tokio::test]
async fn a_stream_cut_midway_ends_with_an_error_event_and_no_done() {
    let cut = Script::Sse {
        events: vec![chunk("Hello"), chunk(" wor")],
        gap_ms: 50,
        end: SseEnd::Cut,
    };
    let (_a, b, m) = two(cut, Script::stream(&["never"]), PLAN).await;
    let r = chat(&m, true, "fcut").await;
    assert_eq!(r.status(), 200);
    assert_eq!(h(&r, "x-meridian-provider"), "first");
    let text = r.text().await.unwrap();
    assert!(text.contains("Hello"), "the partial answer arrived: {text}");
    assert!(!text.contains("[DONE]"), "never a fake clean end: {text}");
    let last = text.trim_end().rsplit("\n\n").next().unwrap();
    assert!(last.starts_with("event: error\ndata: "), "{last}");
    let ev: serde_json::Value =
        serde_json::from_str(last.trim_start_matches("event: error\ndata: ")).unwrap();
    // The connection is cut inside the chunked body: wasi:http reports a transport error, so
    // the stream is broken (a body that ends cleanly before `[DONE]` is `truncated`, checked
    // natively in api::tests).
    let code = ev["error"]["code"].as_str().unwrap().to_string();
    assert_eq!(code, "upstream_stream_broken", "{ev}");
    assert_eq!(
        b.requests().len(),
        0,
        "no fallback after the first byte was sent"
    );
    let log = m.log_for("fcut").await;
    assert_eq!(log["stream_outcome"], "upstream_stream_broken", "{log}");
}

/// A stream that goes silent after its first event ends after the plan's idle timeout (1.5 s
/// here) with an error event naming the timeout. The runtime enforces it (WASI's between-bytes
/// timeout, which the component sets from the plan) without a timer in the component.
#[tokio::test]
async fn a_stream_that_goes_silent_ends_after_the_idle_timeout() {
    let silent = Script::Sse {
        events: vec![chunk("Hello"), chunk(" never")],
        gap_ms: 0,
        end: SseEnd::HoldAfterFirst(std::sync::Arc::new(tokio::sync::Notify::new())),
    };
    let (_a, _b, m) = two(silent, Script::stream(&["never"]), PLAN).await;
    let started = std::time::Instant::now();
    let r = chat(&m, true, "fidle").await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let took = started.elapsed();
    assert!(text.contains("Hello"), "the first event arrived: {text}");
    assert!(!text.contains("[DONE]"), "never a fake clean end: {text}");
    let last = text.trim_end().rsplit("\n\n").next().unwrap();
    assert!(last.starts_with("event: error\ndata: "), "{last}");
    let ev: serde_json::Value =
        serde_json::from_str(last.trim_start_matches("event: error\ndata: ")).unwrap();
    assert_eq!(ev["error"]["code"], "upstream_stream_broken", "{ev}");
    let message = ev["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("timeout (body)"), "{message}");
    // Bounded: the idle timeout, not the stream deadline or the test's patience.
    assert!(took < std::time::Duration::from_secs(10), "{took:?}");
    let log = m.log_for("fidle").await;
    assert_eq!(log["stream_outcome"], "upstream_stream_broken", "{log}");
}

#[tokio::test]
async fn malformed_json_falls_back_and_a_malformed_stream_event_ends_with_an_error() {
    let bad = Script::Json {
        status: 200,
        body: "{\"choices\": [".into(),
        headers: vec![],
    };
    let (_a, _b, m) = two(bad, Script::ok("good"), PLAN).await;
    let r = chat(&m, false, "fmal").await;
    assert_eq!(r.status(), 200);
    // The client reads a label; what the parser said is in the log only.
    assert_eq!(h(&r, "x-meridian-failures"), "first=malformed response");
    let log = m.log_for("fmal").await;
    assert_eq!(
        log["attempts"][0]["detail"], "EOF while parsing a list",
        "{log}"
    );

    let garbled = Script::Sse {
        events: vec![chunk("ok"), "{not json".into(), chunk("more")],
        gap_ms: 0,
        end: SseEnd::Done,
    };
    let (_a, _b, m) = two(garbled, Script::stream(&["x"]), PLAN).await;
    let text = chat(&m, true, "fmal2").await.text().await.unwrap();
    assert!(text.contains("\"ok\""));
    assert!(!text.contains("more") && !text.contains("[DONE]"), "{text}");
    assert!(text.contains("upstream_stream_malformed"), "{text}");
}

#[tokio::test]
async fn hedging_starts_the_second_candidate_and_cancels_the_slower_one() {
    let plan = format!("{PLAN}hedge_after_ms = 200\n");
    let (a, b, m) = two(
        Script::Delay(10_000, Box::new(Script::ok("slow"))),
        Script::ok("fast"),
        &plan,
    )
    .await;
    let started = std::time::Instant::now();
    let r = chat(&m, false, "fhedge").await;
    assert_eq!(r.status(), 200);
    assert_eq!(h(&r, "x-meridian-provider"), "second");
    assert_eq!(h(&r, "x-meridian-hedged"), "true");
    assert_eq!(
        h(&r, "x-meridian-failures"),
        "first=cancelled (another candidate answered first)"
    );
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "did not wait for the slow candidate"
    );
    assert_eq!((a.requests().len(), b.requests().len()), (1, 1));
    // The slower request is cancelled: its connection closes, so the mock's handler is dropped.
    for _ in 0..100 {
        if *a.dropped.lock().unwrap() == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the slower upstream request was not cancelled");
}

#[tokio::test]
async fn retry_after_is_honoured_with_retries_on() {
    // One retry on the same provider: it asks to be called again after 1 s, then answers.
    let up = Mock::with(|_, n| {
        if n == 0 {
            Script::Json {
                status: 429,
                body: "{}".into(),
                headers: vec![("retry-after".into(), "1".into())],
            }
        } else {
            Script::ok("after waiting")
        }
    })
    .await;
    let other = Mock::start(Script::ok("never")).await;
    let policy = policy_for(
        &[("first", &up, "DE", ""), ("second", &other, "FR", "")],
        "",
    )
    .replace(
        "max_body_bytes = 4096
",
        "max_body_bytes = 4096

[settings.plan]
retries = 1
backoff_ms = 10
",
    );
    let m = Meridian::with_policy(&policy, &[]).await;
    let started = std::time::Instant::now();
    let r = chat(&m, false, "fretry").await;
    let waited = started.elapsed();
    assert_eq!(r.status(), 200);
    assert_eq!(h(&r, "x-meridian-provider"), "first");
    assert_eq!(h(&r, "x-meridian-attempts"), "2");
    assert_eq!(h(&r, "x-meridian-failures"), "first=status 429");
    assert!(waited >= Duration::from_millis(1000), "{waited:?}");
    let times = up.requests();
    assert_eq!(times.len(), 2);
    assert_eq!(other.requests().len(), 0);
}

#[tokio::test]
async fn stream_usage_is_costed_in_the_log() {
    let usage = serde_json::json!({"id":"c","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":1000,"completion_tokens":500,"total_tokens":1500}}).to_string();
    let s = Script::Sse {
        events: vec![chunk("hi"), usage],
        gap_ms: 0,
        end: SseEnd::Done,
    };
    let (_a, _b, m) = two(s, Script::ok("x"), PLAN).await;
    let text = chat(&m, true, "fusage").await.text().await.unwrap();
    assert!(text.trim_end().ends_with("[DONE]"));
    let log = m.log_for("fusage").await;
    assert_eq!(log["stream_outcome"], "done");
    assert_eq!(log["usage"]["completion_tokens"], 500);
    // 1000 × 1.0 + 500 × 2.0 USD per million tokens
    assert_eq!(log["cost_usd"].as_f64(), Some(0.002));
}

/// `[settings] stream_events = "framed"` in the deployed component, from the `policy` variable
/// as TOML and as its compiled form: after the first event, an event with a JSON object's
/// outline that is not JSON reaches the client unparsed and the stream ends cleanly; an event
/// without the outline still ends it with an error event (docs/http-api.md).
#[tokio::test]
async fn framed_stream_events_pass_an_outlined_event_and_still_end_a_garbled_one() {
    for compiled in [false, true] {
        for (bad, passes) in [("{not json}", true), ("{not json", false)] {
            let script = Script::Sse {
                events: vec![chunk("ok"), bad.into(), chunk("more")],
                gap_ms: 0,
                end: SseEnd::Done,
            };
            let (ma, mb) = (
                Mock::start(script).await,
                Mock::start(Script::stream(&["x"])).await,
            );
            let toml = policy_for(&[("first", &ma, "DE", ""), ("second", &mb, "FR", "")], "")
                .replace(
                    "max_body_bytes = 4096\n",
                    "max_body_bytes = 4096\nstream_events = \"framed\"\n",
                );
            let policy = if compiled {
                let p = meridian::policy::load(&toml, "framed").unwrap();
                assert_eq!(
                    p.settings.stream_events,
                    meridian::policy::StreamEvents::Framed
                );
                meridian::policy::compiled::compile(&p)
            } else {
                toml
            };
            let m = Meridian::with_policy(&policy, &[]).await;
            let r = chat(&m, true, "fframed").await;
            assert_eq!(h(&r, "x-meridian-provider"), "first");
            let text = r.text().await.unwrap();
            let case = format!("{bad} (compiled: {compiled}): {text}");
            assert!(text.contains("\"ok\""), "{case}");
            assert_eq!(text.contains(&format!("data: {bad}\n")), passes, "{case}");
            assert_eq!(text.contains("\"more\""), passes, "{case}");
            assert_eq!(text.ends_with("data: [DONE]\n\n"), passes, "{case}");
            assert_eq!(
                !text.contains("upstream_stream_malformed"),
                passes,
                "{case}"
            );
            let log = m.log_for("fframed").await;
            let outcome = if passes {
                "done"
            } else {
                "upstream_stream_malformed"
            };
            assert_eq!(log["stream_outcome"], outcome, "{case}: {log}");
        }
    }
}
