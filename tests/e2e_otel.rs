//! Telemetry end to end: meridian-host exports over OTLP http/protobuf to a receiver the test
//! starts on 127.0.0.1 (decoded with the OpenTelemetry project's protobuf types). The component
//! built with `wasi:otel` (spin-otel.toml) adds its spans and metrics under the host's request
//! span: a fallback, a hedge, a stream and a refusal arrive with the right parents and
//! attributes, and the attempts' spans are the `traceparent`s the providers received. The
//! default build, which does not import `wasi:otel`, runs on a host that does not link it, and
//! the `wasi:otel` build refuses to start there, saying what to do.

mod support;

use std::time::Duration;

use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use support::meridian::{build_otel_component, host_binary, p3, root};
use support::otlp::{int_attr, str_attr, Receiver};
use support::{Meridian, Mock, Script};

const CALLER_TRACE: &str = "5bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "10f067aa0ba902b7";

fn traceparent() -> String {
    format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01")
}

fn otel_env(r: &Receiver) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", r.url.clone()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
        ("OTEL_SERVICE_NAME", "meridian-test".into()),
    ]
}

fn id_of(span_id: &[u8]) -> String {
    hex::encode(span_id)
}

/// The component's request span for this request id.
fn request_span(r: &Receiver, request_id: &str) -> Option<Span> {
    r.spans()
        .into_iter()
        .find(|(scope, s)| {
            scope == "meridian"
                && s.kind == SpanKind::Internal as i32
                && str_attr(&s.attributes, "meridian.request_id") == Some(request_id)
        })
        .map(|(_, s)| s)
}

fn children(r: &Receiver, parent: &Span) -> Vec<Span> {
    let mut c: Vec<Span> = r
        .spans()
        .into_iter()
        .map(|(_, s)| s)
        .filter(|s| s.parent_span_id == parent.span_id && s.trace_id == parent.trace_id)
        .collect();
    // In the order the component built them: two attempts can start within the same
    // millisecond, so the start time alone does not order them.
    c.sort_by_key(|s| {
        let seq = match support::otlp::attr(&s.attributes, "meridian.attempt") {
            Some(opentelemetry_proto::tonic::common::v1::any_value::Value::IntValue(n)) => *n,
            _ => i64::MAX,
        };
        (seq, s.start_time_unix_nano)
    });
    c
}

/// The wasi:otel build, built (and its build checked); `None` in the WASI 0.3 pass: it is a
/// WASI 0.2 component, tested in the first pass.
async fn otel_component() -> Option<std::path::PathBuf> {
    if p3() {
        eprintln!("the wasi:otel build is tested in the WASI 0.2 pass");
        return None;
    }
    let (out, wasm) = build_otel_component().await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(wasm)
}

fn host_span(r: &Receiver, span_id: &[u8]) -> Option<Span> {
    r.spans()
        .into_iter()
        .find(|(scope, s)| scope == "meridian-host" && s.span_id == span_id)
        .map(|(_, s)| s)
}

/// The span id a provider was sent in `traceparent`.
fn sent_span(rec: &support::Recorded) -> String {
    let tp = rec
        .header("traceparent")
        .expect("traceparent sent upstream");
    let parts: Vec<&str> = tp.split('-').collect();
    parts[2].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_and_metrics_of_a_fallback_a_hedge_a_stream_and_a_refusal() {
    let Some(wasm) = otel_component().await else {
        return;
    };
    let receiver = Receiver::start().await;
    let down = Mock::start(Script::status(503)).await;
    let up = Mock::with(|req, _| {
        if req.body["model"] == "s-up" {
            Script::Delay(50, Box::new(Script::Sse {
                events: vec![
                    support::mock::chunk("Hel"),
                    r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#.to_string(),
                ],
                gap_ms: 30,
                end: support::mock::SseEnd::Done,
            }))
        } else {
            Script::ok("from up")
        }
    })
    .await;
    let slow = Mock::start(Script::Delay(1500, Box::new(Script::ok("slow")))).await;
    let fast = Mock::start(Script::ok("fast")).await;
    let policy = format!(
        "version = 1\n[settings]\nallow_anonymous = true\n\
         [[providers]]\nid = \"down\"\nbase_url = \"{}/v1\"\nlocation = \"DE\"\nmodels = {{ fb = \"fb-down\" }}\n\
         [[providers]]\nid = \"up\"\nbase_url = \"{}/v1\"\nlocation = \"DE\"\nmodels = {{ fb = {{ id = \"fb-up\", input_price = 1.0, output_price = 2.0 }}, s = \"s-up\" }}\n\
         [[providers]]\nid = \"slow\"\nbase_url = \"{}/v1\"\nlocation = \"DE\"\nmodels = {{ h = \"h-slow\" }}\n\
         [[providers]]\nid = \"fast\"\nbase_url = \"{}/v1\"\nlocation = \"DE\"\nmodels = {{ h = \"h-fast\" }}\n\
         [[providers]]\nid = \"us\"\nbase_url = \"{}/v1\"\nlocation = \"US\"\nmodels = {{ far = \"far-up\" }}\n\
         [[rules]]\nid = \"down-first\"\nwhen = {{ model = [\"fb\"] }}\nprefer = {{ order = [\"down\", \"up\"] }}\n\
         [[rules]]\nid = \"hedged\"\nwhen = {{ model = [\"h\"] }}\nprefer = {{ order = [\"slow\", \"fast\"] }}\nplan = {{ hedge_after_ms = 100 }}\n\
         [[rules]]\nid = \"eu-only\"\nwhen = {{ model = [\"far\"] }}\nrequire = {{ jurisdiction = [\"eu\"] }}\n",
        down.url(),
        up.url(),
        slow.url(),
        fast.url(),
        fast.url(),
    );
    let env = otel_env(&receiver);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let m = Meridian::custom(Some(&wasm), &policy, &env, &["--experimental-wasi-otel"]).await;
    let client = reqwest::Client::new();
    let post = |model: &str, stream: bool| {
        let mut body =
            serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
        if stream {
            body["stream"] = true.into();
            body["stream_options"] = serde_json::json!({"include_usage": true});
        }
        client
            .post(m.at("/v1/chat/completions"))
            .header("traceparent", traceparent())
            .json(&body)
    };

    // A fallback: `down` answers 503, `up` serves.
    let r = post("fb", false).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["x-meridian-trace-id"].to_str().unwrap(),
        CALLER_TRACE
    );
    let fallback_id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    // A hedge: `slow` has sent no headers after 100 ms, `fast` answers first.
    let r = post("h", false).send().await.unwrap();
    assert_eq!(r.headers()["x-meridian-hedged"], "true");
    let hedge_id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    // A stream.
    let r = post("s", true).send().await.unwrap();
    let stream_id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(r.text().await.unwrap().contains("[DONE]"));
    // A refusal: `far` is only served outside the jurisdiction the rule requires.
    let r = post("far", false).send().await.unwrap();
    let refusal_status = r.status().as_u16();
    assert!(refusal_status >= 400);
    let refusal_id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let refusal_code = r.json::<serde_json::Value>().await.unwrap()["error"]["code"]
        .as_str()
        .unwrap()
        .to_string();

    let ids = [&fallback_id, &hedge_id, &stream_id, &refusal_id];
    receiver
        .until("component request spans and their host spans", |r| {
            ids.iter().all(|id| {
                request_span(r, id).is_some_and(|s| host_span(r, &s.parent_span_id).is_some())
            })
        })
        .await;
    receiver
        .until("metrics of the four requests", |r| {
            r.metrics()
                .iter()
                .any(|m| m.name == "meridian.requests.refused")
                && r.metrics()
                    .iter()
                    .any(|m| m.name == "gen_ai.client.inference.time_to_first_chunk")
        })
        .await;
    // The attempt spans: the fallback's two and the hedge's two, however the batches arrive.
    receiver
        .until("the attempt spans of the fallback and the hedge", |r| {
            [&fallback_id, &hedge_id]
                .iter()
                .all(|id| request_span(r, id).is_some_and(|s| children(r, &s).len() >= 2))
        })
        .await;
    assert!(receiver.got.lock().unwrap().bad.is_empty());

    // The fallback: caller → host (server) → component request (internal) → two attempts.
    let req = request_span(&receiver, &fallback_id).unwrap();
    assert_eq!(hex::encode(&req.trace_id), CALLER_TRACE);
    let host = host_span(&receiver, &req.parent_span_id).unwrap();
    assert_eq!(host.kind, SpanKind::Server as i32);
    assert_eq!(
        id_of(&host.parent_span_id),
        CALLER_SPAN,
        "the host's span is the caller's child"
    );
    assert_eq!(hex::encode(&host.trace_id), CALLER_TRACE);
    assert_eq!(req.name, "chat fb");
    assert_eq!(
        str_attr(&req.attributes, "gen_ai.operation.name"),
        Some("chat")
    );
    assert_eq!(
        str_attr(&req.attributes, "gen_ai.request.model"),
        Some("fb")
    );
    assert_eq!(
        str_attr(&req.attributes, "gen_ai.response.model"),
        Some("fb-up")
    );
    assert_eq!(
        str_attr(&req.attributes, "gen_ai.provider.name"),
        Some("up")
    );
    assert_eq!(
        int_attr(&req.attributes, "gen_ai.usage.input_tokens"),
        Some(10)
    );
    assert_eq!(
        int_attr(&req.attributes, "gen_ai.usage.output_tokens"),
        Some(20)
    );
    assert!(str_attr(&req.attributes, "meridian.policy").is_some());
    // Within the host's span (the component's clocks are read in milliseconds).
    const MS: u64 = 1_000_000;
    assert!(req.start_time_unix_nano + 2 * MS >= host.start_time_unix_nano);
    assert!(req.end_time_unix_nano <= host.end_time_unix_nano + 2 * MS);
    let attempts = children(&receiver, &req);
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    assert!(attempts.iter().all(|a| a.kind == SpanKind::Client as i32));
    assert_eq!(id_of(&attempts[0].span_id), sent_span(&down.requests()[0]));
    assert_eq!(id_of(&attempts[1].span_id), sent_span(&up.requests()[0]));
    assert_eq!(
        str_attr(&attempts[0].attributes, "error.type"),
        Some("status 503")
    );
    assert_eq!(attempts[0].status.as_ref().unwrap().code, 2, "error status");
    assert_eq!(attempts[1].name, "chat fb-up");

    // The hedge: two sibling attempts, the second started by hedging 100 ms after the first.
    let req = request_span(&receiver, &hedge_id).unwrap();
    let attempts = children(&receiver, &req);
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    assert_eq!(id_of(&attempts[0].span_id), sent_span(&slow.requests()[0]));
    assert_eq!(id_of(&attempts[1].span_id), sent_span(&fast.requests()[0]));
    let gap_ms = (attempts[1].start_time_unix_nano - attempts[0].start_time_unix_nano) / 1_000_000;
    assert!((100..1000).contains(&gap_ms), "hedged after {gap_ms} ms");
    assert_eq!(
        support::otlp::attr(&attempts[1].attributes, "meridian.attempt.hedge"),
        Some(&opentelemetry_proto::tonic::common::v1::any_value::Value::BoolValue(true))
    );
    assert!(str_attr(&attempts[0].attributes, "error.type")
        .unwrap()
        .starts_with("cancelled"));

    // The stream: its time to the first chunk, its usage, and its end.
    let req = request_span(&receiver, &stream_id).unwrap();
    assert_eq!(
        str_attr(&req.attributes, "meridian.stream.outcome"),
        Some("done")
    );
    assert_eq!(
        int_attr(&req.attributes, "gen_ai.usage.output_tokens"),
        Some(4)
    );
    let ttfc = match support::otlp::attr(&req.attributes, "gen_ai.response.time_to_first_chunk") {
        Some(opentelemetry_proto::tonic::common::v1::any_value::Value::DoubleValue(f)) => *f,
        other => panic!("{other:?}"),
    };
    let total = (req.end_time_unix_nano - req.start_time_unix_nano) as f64 / 1e9;
    // The provider's headers came after 50 ms, its first event with them, its last 30 ms later.
    assert!(
        ttfc >= 0.05 && ttfc < total,
        "first chunk {ttfc} s of {total} s"
    );
    assert!(total >= 0.08, "{total}");

    // The refusal: one span, no attempts, its reason.
    let req = request_span(&receiver, &refusal_id).unwrap();
    assert_eq!(
        str_attr(&req.attributes, "error.type"),
        Some(refusal_code.as_str())
    );
    assert_eq!(
        int_attr(&req.attributes, "http.response.status_code"),
        Some(i64::from(refusal_status))
    );
    assert!(children(&receiver, &req).is_empty());

    // Metrics.
    let metrics = receiver.metrics();
    let sum_of = |name: &str, key: &str, value: &str| -> f64 {
        metrics
            .iter()
            .filter(|m| m.name == name)
            .flat_map(|m| match &m.data {
                Some(Data::Sum(s)) => s.data_points.clone(),
                _ => vec![],
            })
            .filter(|p| str_attr(&p.attributes, key) == Some(value))
            .map(|p| match p.value {
                Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsInt(
                    n,
                )) => n as f64,
                Some(
                    opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsDouble(f),
                ) => f,
                None => 0.0,
            })
            .sum()
    };
    assert_eq!(
        sum_of("meridian.fallbacks", "meridian.provider", "down"),
        1.0
    );
    assert_eq!(
        sum_of("meridian.fallbacks", "meridian.provider", "slow"),
        0.0,
        "a cancelled hedge is no fallback"
    );
    assert_eq!(
        sum_of(
            "meridian.requests.refused",
            "meridian.refusal.reason",
            &refusal_code
        ),
        1.0
    );
    assert_eq!(
        sum_of(
            "gen_ai.client.inference.usage.input_tokens",
            "meridian.provider",
            "up"
        ),
        13.0,
        "10 from the fallback's answer, 3 from the stream's"
    );
    // 10 input and 20 output tokens at 1 and 2 USD per million.
    let cost = sum_of("meridian.cost", "meridian.provider", "up");
    assert!((cost - 50e-6).abs() < 1e-12, "{cost}");
    let durations: u64 = metrics
        .iter()
        .filter(|m| m.name == "gen_ai.client.inference.duration")
        .flat_map(|m| match &m.data {
            Some(Data::Histogram(h)) => h.data_points.iter().map(|p| p.count).collect(),
            _ => vec![],
        })
        .sum();
    assert_eq!(durations, 4, "one duration per inference request");
    for m in &metrics {
        assert!(!m.name.is_empty());
    }
    // Never a prompt: "hi" was every request's content.
    for (_, s) in receiver.spans() {
        for a in &s.attributes {
            assert_ne!(
                str_attr(std::slice::from_ref(a), &a.key),
                Some("hi"),
                "{}",
                a.key
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_build_runs_without_wasi_otel_and_the_host_still_traces() {
    let receiver = Receiver::start().await;
    let up = Mock::start(Script::ok("hello")).await;
    let policy = format!(
        "version = 1\n[settings]\nallow_anonymous = true\n[[providers]]\nid = \"up\"\nbase_url = \"{}/v1\"\nlocation = \"DE\"\nmodels = {{ m = \"m-up\" }}\n",
        up.url()
    );
    let env = otel_env(&receiver);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // No --experimental-wasi-otel: the host links no wasi:otel, and the default build needs none.
    let m = Meridian::custom(None, &policy, &env, &[]).await;
    let r = reqwest::Client::new()
        .post(m.at("/v1/chat/completions"))
        .header("traceparent", traceparent())
        .json(&serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-meridian-trace-id"], CALLER_TRACE);
    receiver
        .until("the host's request span", |r| {
            r.spans().iter().any(|(scope, s)| {
                scope == "meridian-host" && id_of(&s.parent_span_id) == CALLER_SPAN
            })
        })
        .await;
    let (_, host) = receiver
        .spans()
        .into_iter()
        .find(|(scope, _)| scope == "meridian-host")
        .unwrap();
    assert_eq!(hex::encode(&host.trace_id), CALLER_TRACE);
    assert_eq!(host.kind, SpanKind::Server as i32);
    assert_eq!(
        int_attr(&host.attributes, "http.response.status_code"),
        Some(200)
    );
    assert!(
        receiver
            .spans()
            .iter()
            .all(|(scope, _)| scope != "meridian"),
        "the default build emits no spans of its own"
    );
    // The upstream request still carries the caller's trace.
    assert!(up.requests()[0]
        .header("traceparent")
        .unwrap()
        .contains(CALLER_TRACE));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wasi_otel_build_refuses_to_start_on_a_host_without_it() {
    let Some(wasm) = otel_component().await else {
        return;
    };
    let run = tokio::process::Command::new(host_binary())
        .current_dir(root())
        .args([
            "--manifest",
            "spin.toml",
            "--listen",
            "127.0.0.1:0",
            "--component",
        ])
        .arg(&wasm)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("meridian-host exits within 120 s")
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("wasi:otel"), "{err}");
    assert!(err.contains("--experimental-wasi-otel"), "{err}");
}

/// The host batches the requests' metrics as the OpenTelemetry SDKs' batch processors do (many
/// requests, few exports, not a POST per request), and reports what its export queue dropped
/// in a metric of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hosts_metrics_export_is_batched_and_counts_what_it_dropped() {
    let Some(wasm) = otel_component().await else {
        return;
    };
    let receiver = Receiver::start().await;
    let up = Mock::start(Script::ok("fine")).await;
    let policy = format!(
        "version = 1\n[settings]\nallow_anonymous = true\n\
         [[providers]]\nid = \"up\"\nbase_url = \"{}/v1\"\nlocation = \"DE\"\nmodels = {{ m = \"m-up\" }}\n",
        up.url()
    );
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "1000"),
    ];
    let m = Meridian::custom(Some(&wasm), &policy, &env, &["--experimental-wasi-otel"]).await;
    let client = reqwest::Client::new();
    const N: usize = 30;
    for _ in 0..N {
        let r = client
            .post(m.at("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let durations = |r: &Receiver| {
        r.metrics()
            .iter()
            .filter(|m| m.name == "gen_ai.client.inference.duration")
            .count()
    };
    receiver
        .until("the metrics of every request", |r| durations(r) >= N)
        .await;
    let exports = receiver.got.lock().unwrap().metrics.len();
    assert!(
        exports * 5 <= N,
        "{exports} metric exports for {N} requests"
    );
    let dropped: Vec<_> = receiver
        .metrics()
        .into_iter()
        .filter(|m| m.name == "meridian.host.telemetry.dropped")
        .collect();
    assert!(!dropped.is_empty(), "no dropped-items metric");
    let Some(opentelemetry_proto::tonic::metrics::v1::metric::Data::Sum(s)) = &dropped[0].data
    else {
        panic!("{:?}", dropped[0]);
    };
    assert_eq!(
        s.data_points[0].value,
        Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsInt(0))
    );
}
