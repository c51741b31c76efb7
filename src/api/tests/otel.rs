//! OpenTelemetry spans and metrics rendered from whole requests: the attempts' spans are the
//! ones sent upstream in `traceparent`, siblings under the request's span; attributes follow the
//! GenAI conventions; the metrics count what happened. Oracles: what the scripted providers
//! received and when, and what the client was answered.

use super::*;
use crate::otel::{self, Instrument, Number, Span, Telemetry, Value};
use crate::trace::{parse_traceparent, HostSpan};

const WALL_AT_END: u64 = 1_800_000_000_000;

fn render(p: &Policy, t: &Fake, a: &Answer) -> Telemetry {
    otel::render(&a.record, Some(p), WALL_AT_END, t.now_ms())
}

fn attr<'a>(s: &'a Span, key: &str) -> Option<&'a Value> {
    s.attributes.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
}

fn str_attr<'a>(s: &'a Span, key: &str) -> &'a str {
    match attr(s, key) {
        Some(Value::Str(v)) => v,
        other => panic!("{key}: {other:?} on {}", s.name),
    }
}

fn int_attr(s: &Span, key: &str) -> i64 {
    match attr(s, key) {
        Some(Value::Int(v)) => *v,
        other => panic!("{key}: {other:?} on {}", s.name),
    }
}

fn metric<'a>(t: &'a Telemetry, name: &str) -> Option<&'a otel::Metric> {
    t.metrics.iter().find(|m| m.name == name)
}

/// The span ids the providers were sent, in the order they were sent.
fn sent_spans(t: &Fake) -> Vec<[u8; 8]> {
    t.requests
        .borrow()
        .iter()
        .map(|r| {
            parse_traceparent(r.header("traceparent").expect("traceparent"))
                .unwrap()
                .1
        })
        .collect()
}

/// Milliseconds since the Unix epoch at a moment of the fake clock, as the render places it.
fn wall_ns(t: &Fake, at_ms: u64) -> u64 {
    (WALL_AT_END - (t.now_ms() - at_ms)) * 1_000_000
}

#[tokio::test(start_paused = true)]
async fn a_fallback_is_two_sibling_client_spans_under_the_request_and_a_fallback_count() {
    let (p, t, a) = alpha_fails_over_to_beta(&[]).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let tel = render(&p, &t, &a);
    assert_eq!(tel.spans.len(), 3, "{:#?}", tel.spans);
    let req = &tel.spans[0];
    assert_eq!(req.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(
        req.parent_id_hex(),
        "00f067aa0ba902b7",
        "a child of the caller's span"
    );
    assert!(!req.client);
    assert_eq!(req.name, "chat chat-model");
    assert_eq!(str_attr(req, "gen_ai.operation.name"), "chat");
    assert_eq!(str_attr(req, "gen_ai.request.model"), "chat-model");
    assert_eq!(str_attr(req, "gen_ai.response.model"), "b-m");
    // beta's API is no well-known provider's: the policy's name for it.
    assert_eq!(str_attr(req, "gen_ai.provider.name"), "beta");
    assert_eq!(int_attr(req, "gen_ai.usage.input_tokens"), 1);
    assert_eq!(int_attr(req, "gen_ai.usage.output_tokens"), 2);
    assert_eq!(str_attr(req, "meridian.tenant"), "acme");
    assert_eq!(str_attr(req, "meridian.provider"), "beta");
    assert_eq!(int_attr(req, "meridian.attempts"), 2);
    assert_eq!(
        attr(req, "meridian.rules"),
        Some(&Value::Strs(vec!["a-first".into()]))
    );
    assert_eq!(
        str_attr(req, "meridian.request_id"),
        a.header("x-request-id").unwrap()
    );
    assert_eq!(req.error, None);

    // The attempts' spans are exactly the ones the providers were sent, in that order.
    let sent = sent_spans(&t);
    let attempts = &tel.spans[1..];
    assert_eq!(attempts.iter().map(|s| s.span_id).collect::<Vec<_>>(), sent);
    for s in attempts {
        assert!(s.client);
        assert_eq!(s.trace_id, req.trace_id);
        assert_eq!(s.parent_id, Some(req.span_id), "siblings under the request");
    }
    let (alpha, beta) = (&attempts[0], &attempts[1]);
    assert_eq!(alpha.name, "chat a-m");
    assert_eq!(str_attr(alpha, "meridian.provider"), "alpha");
    assert_eq!(str_attr(alpha, "error.type"), "status 503");
    assert_eq!(alpha.error.as_deref(), Some("status 503"));
    assert_eq!(beta.name, "chat b-m");
    assert_eq!(str_attr(beta, "gen_ai.response.model"), "b-m");
    assert_eq!(int_attr(beta, "gen_ai.usage.output_tokens"), 2);
    assert!(attr(beta, "error.type").is_none());
    // Times: the providers' requests, as the fake clock saw them.
    let times: Vec<u64> = t.sent.borrow().iter().map(|(_, at)| *at).collect();
    assert_eq!(alpha.start_unix_ns, wall_ns(&t, times[0]));
    assert_eq!(beta.start_unix_ns, wall_ns(&t, times[1]));
    assert!(alpha.end_unix_ns <= beta.start_unix_ns);
    assert!(req.start_unix_ns <= alpha.start_unix_ns && beta.end_unix_ns <= req.end_unix_ns);

    let fallbacks = metric(&tel, "meridian.fallbacks").expect("a fallback is counted");
    assert_eq!(fallbacks.points.len(), 1);
    let (dims, n) = &fallbacks.points[0];
    assert_eq!(*n, Number::U64(1));
    assert!(dims.contains(&("meridian.provider", Value::Str("alpha".into()))));
    assert!(dims.contains(&("meridian.fallback.reason", Value::Str("status 503".into()))));
    let usage = metric(&tel, "gen_ai.client.inference.usage.output_tokens").unwrap();
    assert_eq!(usage.instrument, Instrument::Counter);
    assert_eq!(usage.points[0].1, Number::U64(2));
    let duration = metric(&tel, "gen_ai.client.inference.duration").unwrap();
    assert!(matches!(duration.instrument, Instrument::Histogram(_)));
    assert!(
        metric(&tel, "meridian.cost").is_none(),
        "beta has no prices"
    );
    assert!(metric(&tel, "meridian.requests.refused").is_none());
}

#[tokio::test(start_paused = true)]
async fn a_hedge_is_a_sibling_started_after_the_hedge_delay_and_no_fallback() {
    let p = load("[settings.plan]\nhedge_after_ms = 100\n");
    let t = Fake::new(vec![
        ("alpha", vec![ok_json(400)]),
        ("beta", vec![ok_json(10)]),
    ]);
    let a = chat(&p, &t, &ACME_DE, CHAT).await;
    assert_eq!(a.header("x-meridian-hedged"), Some("true"));
    let tel = render(&p, &t, &a);
    let req = &tel.spans[0];
    assert_eq!(req.parent_id, None, "no caller trace: the root");
    let sent = sent_spans(&t);
    assert_eq!(tel.spans.len(), 3);
    let (alpha, beta) = (&tel.spans[1], &tel.spans[2]);
    assert_eq!([alpha.span_id, beta.span_id], [sent[0], sent[1]]);
    assert_eq!(alpha.parent_id, Some(req.span_id));
    assert_eq!(beta.parent_id, Some(req.span_id));
    assert_eq!(beta.start_unix_ns - alpha.start_unix_ns, 100 * 1_000_000);
    assert_eq!(
        attr(beta, "meridian.attempt.hedge"),
        Some(&Value::Bool(true))
    );
    assert!(str_attr(alpha, "error.type").starts_with("cancelled"));
    assert_eq!(attr(req, "meridian.hedged"), Some(&Value::Bool(true)));
    assert!(
        metric(&tel, "meridian.fallbacks").is_none(),
        "a cancelled hedge is no failure"
    );
    // alpha prices its model: the answer cost beta's nothing, alpha's nothing answered.
    assert_eq!(str_attr(req, "meridian.provider"), "beta");
}

#[tokio::test(start_paused = true)]
async fn a_stream_reports_its_time_to_first_chunk_and_lasts_to_its_end() {
    let p = load("");
    let t = Fake::new(vec![(
        "alpha",
        vec![Step::Answer {
            after_ms: 20,
            status: 200,
            headers: vec![],
            chunks: vec![
                (30, Ok(EV1.as_bytes().to_vec())),
                (
                    50,
                    Ok(format!("data: {{\"choices\":[],\"usage\":{{\"prompt_tokens\":5,\"completion_tokens\":7,\"total_tokens\":12}}}}\n\n{DONE}").into_bytes()),
                ),
            ],
        }],
    )]);
    let a = chat(&p, &t, &ACME_DE, &chat_body(r#","stream":true"#)).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.record.stream_outcome, Some("done"));
    let tel = render(&p, &t, &a);
    let (req, alpha) = (&tel.spans[0], &tel.spans[1]);
    // Headers after 20 ms, the first event 30 ms later.
    let first = 0.05;
    match attr(req, "gen_ai.response.time_to_first_chunk") {
        Some(Value::Float(f)) => assert!((f - first).abs() < 1e-9, "{f}"),
        other => panic!("{other:?}"),
    }
    match attr(alpha, "gen_ai.response.time_to_first_chunk") {
        Some(Value::Float(f)) => assert!((f - first).abs() < 1e-9, "{f}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        req.end_unix_ns - req.start_unix_ns,
        100 * 1_000_000,
        "to the stream's end"
    );
    assert_eq!(alpha.end_unix_ns, req.end_unix_ns);
    assert_eq!(int_attr(req, "gen_ai.usage.input_tokens"), 5);
    assert_eq!(str_attr(req, "meridian.stream.outcome"), "done");
    assert_eq!(req.error, None);
    let ttfc = metric(&tel, "gen_ai.client.inference.time_to_first_chunk").unwrap();
    assert_eq!(ttfc.points[0].1, Number::F64(first));
    // alpha prices its model at 1 and 2 USD per million tokens.
    let cost = metric(&tel, "meridian.cost").unwrap();
    let expected = (5.0 * 1.0 + 7.0 * 2.0) / 1e6;
    assert!((cost.points[0].1.as_f64() - expected).abs() < 1e-12);
    let input = metric(&tel, "gen_ai.client.inference.usage.input_tokens").unwrap();
    assert_eq!(input.points[0].1, Number::U64(5));
}

#[tokio::test(start_paused = true)]
async fn a_refusal_is_one_span_with_its_reason_and_a_refusal_count() {
    let p = load("");
    let t = no_script();
    let body = r#"{"model":"us-model","messages":[{"role":"user","content":"hi"}]}"#;
    let a = chat(&p, &t, &[JSON, ("authorization", "Bearer sk-eu")], body).await;
    assert!(a.status >= 400, "{}", a.text());
    let code = a.code();
    let tel = render(&p, &t, &a);
    assert_eq!(tel.spans.len(), 1, "nothing was sent upstream");
    let req = &tel.spans[0];
    assert_eq!(str_attr(req, "error.type"), code);
    assert_eq!(req.error.as_deref(), Some(code.as_str()));
    assert_eq!(
        int_attr(req, "http.response.status_code"),
        i64::from(a.status)
    );
    match attr(req, "meridian.providers.excluded") {
        Some(Value::Strs(v)) => assert!(v.iter().any(|e| e.starts_with("beta: ")), "{v:?}"),
        other => panic!("{other:?}"),
    }
    let refused = metric(&tel, "meridian.requests.refused").unwrap();
    assert!(refused.points[0]
        .0
        .contains(&("meridian.refusal.reason", Value::Str(code.clone()))));
    assert_eq!(refused.points[0].1, Number::U64(1));
}

#[tokio::test(start_paused = true)]
async fn under_a_runtime_span_the_request_is_its_child_and_upstream_follows() {
    let host =
        HostSpan::from_hex("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", true).unwrap();
    HOST_SPAN.with(|h| h.set(Some(host)));
    let p = load("");
    let t = Fake::new(vec![("alpha", vec![ok_json(0)])]);
    let a = chat(&p, &t, &ACME_DE, CHAT).await;
    HOST_SPAN.with(|h| h.set(None));
    assert_eq!(
        a.header("x-meridian-trace-id"),
        Some("0af7651916cd43dd8448eb211c80319c")
    );
    let tel = render(&p, &t, &a);
    assert_eq!(tel.spans[0].parent_id_hex(), "b7ad6b7169203331");
    let sent = t.requests.borrow()[0]
        .header("traceparent")
        .unwrap()
        .to_string();
    assert!(
        sent.starts_with("00-0af7651916cd43dd8448eb211c80319c-"),
        "{sent}"
    );
    assert_eq!(tel.spans[1].span_id, parse_traceparent(&sent).unwrap().1);
    // A host that is not tracing gives zero ids: no host span.
    assert_eq!(
        HostSpan::from_hex(&"0".repeat(32), &"0".repeat(16), false),
        None
    );
}

#[test]
fn attribute_values_travel_as_json() {
    assert_eq!(Value::Str("a\"b".into()).json(), r#""a\"b""#);
    assert_eq!(Value::Int(-3).json(), "-3");
    assert_eq!(Value::Float(0.5).json(), "0.5");
    assert_eq!(Value::Bool(true).json(), "true");
    assert_eq!(
        Value::Strs(vec!["x".into(), "y".into()]).json(),
        r#"["x","y"]"#
    );
}

#[test]
fn well_known_providers_are_named_by_their_api() {
    let p = policy::load(
        "version = 1\nname = \"n\"\n[[providers]]\nid = \"oa\"\nbase_url = \"https://api.openai.com/v1\"\nlocation = \"US\"\nmodels = { m = \"m\" }\n\
         [[providers]]\nid = \"az\"\nkind = \"azure\"\nbase_url = \"https://x.openai.azure.com\"\nlocation = \"SE\"\napi_version = \"2024-10-21\"\nmodels = { m = \"m\" }\n\
         [[providers]]\nid = \"local\"\nbase_url = \"http://127.0.0.1:8000/v1\"\nlocation = \"DE\"\nself_hosted = true\nmodels = { m = \"m\" }\n",
        "p",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(otel::provider_name(Some(&p), "oa"), "openai");
    assert_eq!(otel::provider_name(Some(&p), "az"), "azure.ai.openai");
    assert_eq!(otel::provider_name(Some(&p), "local"), "local");
    assert_eq!(
        otel::operation("POST", "/v1/embeddings"),
        Some("embeddings")
    );
    assert_eq!(otel::operation("GET", "/v1/models"), None);
}
