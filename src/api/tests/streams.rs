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
