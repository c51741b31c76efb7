//! Trace context end to end: the caller's trace goes on to every attempt, each attempt a child
//! of Meridian's request span (so retries, fallbacks and hedges are siblings), and the trace id
//! is in a response header and the log line.

use super::*;
use crate::trace::parse_traceparent;

#[tokio::test(start_paused = true)]
async fn a_callers_trace_reaches_every_attempt_as_siblings_under_meridians_span() {
    // `alpha` fails with a fallback status, then `beta` answers.
    let (_, t, a) = alpha_fails_over_to_beta(&[("tracestate", "congo=t61rcWkgMzE")]).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(
        a.header("x-meridian-trace-id"),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    let sent = t.requests.borrow();
    assert_eq!(sent.len(), 2);
    let mut spans = Vec::new();
    for r in sent.iter() {
        let (trace, span, flags) = parse_traceparent(r.header("traceparent").unwrap()).unwrap();
        assert_eq!(hex::encode(trace), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(flags, 1);
        assert_ne!(
            hex::encode(span),
            "00f067aa0ba902b7",
            "a span of Meridian's, not the caller's"
        );
        assert_eq!(r.header("tracestate"), Some("congo=t61rcWkgMzE"));
        spans.push(span);
    }
    assert_ne!(spans[0], spans[1], "each attempt its own span");
    // The log line places Meridian's span under the caller's; the attempts are its children.
    let line: serde_json::Value = serde_json::from_str(&a.record.log_line(0, 0)).unwrap();
    assert_eq!(line["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(line["parent_span_id"], "00f067aa0ba902b7");
    // Checked against what was sent, not against the code's own derivation: Meridian's span is
    // a well-formed id of its own, neither the caller's nor any attempt's.
    let own = line["span_id"].as_str().unwrap();
    assert_eq!(own.len(), 16);
    assert!(own.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_ne!(own, "00f067aa0ba902b7");
    for s in &spans {
        assert_ne!(
            hex::encode(s),
            own,
            "an attempt is a child, not Meridian's span itself"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn without_a_traceparent_meridian_starts_the_trace() {
    let p = load("");
    let t = Fake::new(vec![("alpha", vec![ok_json(0)])]);
    let a = chat(&p, &t, &ACME_DE, CHAT).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let id = a.header("x-meridian-trace-id").unwrap().to_string();
    assert_eq!(id.len(), 32);
    let sent = t.requests.borrow()[0].clone();
    let (trace, _, _) = parse_traceparent(sent.header("traceparent").unwrap()).unwrap();
    assert_eq!(hex::encode(trace), id);
    assert_eq!(sent.header("tracestate"), None);
    let line: serde_json::Value = serde_json::from_str(&a.record.log_line(0, 0)).unwrap();
    assert_eq!(line["trace_id"], id.as_str());
    assert!(line.get("parent_span_id").is_none());
    // A browser may send the trace headers: the preflight allows them.
    let pre = call(
        &p,
        &no_script(),
        "OPTIONS",
        "/v1/chat/completions",
        &[("origin", "https://app.example")],
        "",
    )
    .await;
    let allowed = pre
        .header("access-control-allow-headers")
        .unwrap_or_default();
    assert!(
        allowed.contains("traceparent") && allowed.contains("tracestate"),
        "{allowed}"
    );
}

#[test]
fn a_fresh_request_id_is_mrd_and_sixteen_hex_digits_of_the_random_number() {
    assert_eq!(fresh_request_id(0), "mrd-0000000000000000");
    assert_eq!(fresh_request_id(0xab), "mrd-00000000000000ab");
    assert_eq!(
        fresh_request_id(0x0123_4567_89ab_cdef),
        "mrd-0123456789abcdef"
    );
    assert_eq!(fresh_request_id(u64::MAX), "mrd-ffffffffffffffff");
}
