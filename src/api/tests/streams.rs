//! Streams: truthful to the end, and ended by the stream deadline.

use super::*;

#[tokio::test(start_paused = true)]
async fn streams_are_truthful_to_the_end() {
    let p = load("");
    let stream_req = chat_body(r#","stream":true"#);
    let go = |t: Fake| {
        let p = &p;
        let body = stream_req.clone();
        async move {
            let h = [
                JSON,
                ("cf-ipcountry", "DE"),
                ("authorization", "Bearer sk-acme"),
            ];
            let a = chat(p, &t, &h, &body).await;
            (a, t)
        }
    };
    // Clean: everything through [DONE], nothing after it, a reset after it is no error.
    let (a, _) = go(Fake::new(vec![(
        "alpha",
        vec![Step::Answer {
            after_ms: 0,
            status: 200,
            headers: vec![],
            chunks: vec![
                (0, Ok(EV1.as_bytes().to_vec())),
                (
                    5,
                    Ok(format!("{EV2}{DONE}data: {{\"late\":1}}\n\n").into_bytes()),
                ),
                (5, Err(Failure::Transport("connection reset".into()))),
            ],
        }],
    )]))
    .await;
    assert_eq!(a.text(), format!("{EV1}{EV2}{DONE}"));
    assert_eq!(a.record.stream_outcome, Some("done"));

    // A malformed line: the valid events before it (in the same chunk) are delivered, then the
    // error event, and no [DONE].
    let (a, _) = go(Fake::new(vec![(
        "alpha",
        vec![sse(&[
            (0, EV1),
            (0, &format!("{EV2}data: {{broken\n\n{DONE}")),
        ])],
    )]))
    .await;
    let text = a.text();
    assert!(
        text.starts_with(&format!("{EV1}{EV2}event: error\n")),
        "{text}"
    );
    assert!(!text.contains("[DONE]"));
    assert_eq!(a.record.stream_outcome, Some("upstream_stream_malformed"));

    // Cut off after the first event: an error event, never a clean end.
    let (a, _) = go(Fake::new(vec![("alpha", vec![sse(&[(0, EV1), (0, EV2)])])])).await;
    assert!(a.text().ends_with("}\n\n") && a.text().contains("upstream_stream_truncated"));

    // A first event that is an error, or garbage: nothing was sent, so the next candidate serves.
    for first in [
        "data: {\"error\":{\"message\":\"overloaded\"}}\n\n",
        "data: <html>oops\n\n",
    ] {
        let (a, t) = go(Fake::new(vec![
            ("alpha", vec![sse(&[(0, first)])]),
            ("beta", vec![sse(&[(0, EV1), (0, DONE)])]),
        ]))
        .await;
        assert_eq!(a.status, 200, "{first}");
        assert_eq!(a.header("x-meridian-provider"), Some("beta"), "{first}");
        assert_eq!(a.text(), format!("{EV1}{DONE}"), "{first}");
        assert!(a
            .header("x-meridian-failures")
            .unwrap()
            .starts_with("alpha=malformed response"));
        assert_eq!(t.sent_to(), ["alpha", "beta"]);
    }
}

#[tokio::test(start_paused = true)]
async fn the_stream_deadline_ends_a_stream_that_runs_too_long() {
    let p = load("[settings.plan]\nstream_deadline_ms = 1000\nidle_timeout_ms = 5000\n");
    let chunks: Vec<(u64, &str)> = std::iter::once((0, EV1))
        .chain(std::iter::repeat_n((300, EV2), 10))
        .collect();
    let t = Fake::new(vec![("alpha", vec![sse(&chunks)])]);
    let a = chat(
        &p,
        &t,
        &[JSON, ("cf-ipcountry", "DE")],
        &chat_body(r#","stream":true"#),
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.record.stream_outcome, Some("stream_deadline_exceeded"));
    assert!(a.text().contains("stream_deadline_exceeded"));
    assert_eq!(
        a.text().matches("\"lo\"").count(),
        3,
        "events until the deadline: {}",
        a.text()
    );
    assert!(t.now_ms() <= 1000, "{}", t.now_ms());
}

/// `[settings] stream_events = "framed"` (docs/http-api.md, "Streaming contract"): after the
/// first event, a chat event passed on as it came whose data has a JSON object's outline and
/// cannot name `usage` or `error` goes on unparsed; everything else is checked as under the
/// default, `"checked"`: the first event, an event without the outline, the usage and error
/// events, and every event of a stream Meridian rewrites (here, for an Anthropic client).
#[tokio::test(start_paused = true)]
async fn framed_stream_events_leave_only_outlined_plain_events_unparsed() {
    let framed = policy::load(&framed(policy_text("")), "api").unwrap();
    assert_eq!(framed.settings.stream_events, policy::StreamEvents::Framed);
    let checked = load("");
    assert_eq!(
        checked.settings.stream_events,
        policy::StreamEvents::Checked
    );
    let go = |p: &Policy, script: Vec<(&'static str, Vec<Step>)>| {
        let t = Fake::new(script);
        let p = p.clone();
        async move {
            let h = [
                JSON,
                ("cf-ipcountry", "DE"),
                ("authorization", "Bearer sk-acme"),
            ];
            chat(&p, &t, &h, &chat_body(r#","stream":true"#)).await
        }
    };
    // Braces that are not JSON, between two events: passed on unparsed under "framed", the
    // stream's end under "checked".
    let garbled = &garbled_event("x");
    assert!(serde_json::from_str::<serde_json::Value>(&garbled[6..]).is_err());
    let usage = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":5,\"total_tokens\":8}}\n\n";
    let stream = |_: ()| {
        vec![(
            "alpha",
            vec![sse(&[
                (0, EV1),
                (0, garbled),
                (0, EV2),
                (0, usage),
                (0, DONE),
            ])],
        )]
    };
    let a = go(&framed, stream(())).await;
    assert_eq!(a.text(), format!("{EV1}{garbled}{EV2}{usage}{DONE}"));
    assert_eq!(a.record.stream_outcome, Some("done"));
    let u = a.record.usage.expect("the usage event is read");
    assert_eq!((u.prompt_tokens, u.completion_tokens), (3, 5));
    let a = go(&checked, stream(())).await;
    assert!(
        a.text().starts_with(&format!("{EV1}event: error\n")),
        "{}",
        a.text()
    );
    assert_eq!(a.record.stream_outcome, Some("upstream_stream_malformed"));

    // Checked under both: an event without a JSON object's outline, and an upstream's error.
    for (bad, outcome) in [
        ("data: {\"choices\":[]\n\n", "upstream_stream_malformed"),
        ("data: <html>oops</html>\n\n", "upstream_stream_malformed"),
        ("data: [{\"choices\":[]}]\n\n", "upstream_stream_malformed"),
        (
            "data: {\"error\":{\"message\":\"overloaded\"}}\n\n",
            "upstream_stream_error",
        ),
    ] {
        for p in [&framed, &checked] {
            let a = go(
                p,
                vec![("alpha", vec![sse(&[(0, EV1), (0, bad), (0, EV2)])])],
            )
            .await;
            assert_eq!(a.record.stream_outcome, Some(outcome), "{bad}");
            assert!(!a.text().contains("[DONE]"), "{bad}");
            assert!(a.text().contains(outcome), "{bad}: {}", a.text());
        }
    }

    // The first event is checked whole under both: garbage in braces falls back to `beta`.
    let a = go(
        &framed,
        vec![
            ("alpha", vec![sse(&[(0, "data: {oops}\n\n")])]),
            ("beta", vec![sse(&[(0, EV1), (0, DONE)])]),
        ],
    )
    .await;
    assert_eq!(a.header("x-meridian-provider"), Some("beta"));
    assert_eq!(a.text(), format!("{EV1}{DONE}"));

    // A stream Meridian rewrites reads every event: for an Anthropic client, the garbled event
    // ends the stream with Anthropic's error event, not a silently shorter message.
    let t = Fake::new(vec![(
        "alpha",
        vec![sse(&[(0, EV1), (0, garbled), (0, EV2), (0, DONE)])],
    )]);
    let h = [
        JSON,
        ("cf-ipcountry", "DE"),
        ("x-api-key", "sk-acme"),
        ("anthropic-version", "2023-06-01"),
    ];
    let body = r#"{"model":"chat-model","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let a = call(&framed, &t, "POST", "/v1/messages", &h, body).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.record.stream_outcome, Some("upstream_stream_malformed"));
    assert!(a.text().contains("event: error"), "{}", a.text());
    assert!(!a.text().contains("message_stop"), "{}", a.text());
}
