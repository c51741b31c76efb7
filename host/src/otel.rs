//! Telemetry as Spin exports it: the host's own span for every request (kind server, a child of
//! the caller's `traceparent`), and, with `--experimental-wasi-otel` (Spin's flag), the
//! component's spans and metrics through `wasi:otel@0.2.0-rc.2` (`tracing`, `metrics`, `logs`),
//! the component's request span a child of the host's. Exported over OTLP http/protobuf when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or a signal's own `OTEL_EXPORTER_OTLP_{TRACES,METRICS}_ENDPOINT`)
//! is set, read as Spin and the OpenTelemetry SDKs read them:
//!
//! - `OTEL_EXPORTER_OTLP_ENDPOINT`: the base URL, `/v1/traces` and `/v1/metrics` appended;
//!   a signal's own endpoint is used as it is;
//! - `OTEL_EXPORTER_OTLP_[TRACES_|METRICS_]PROTOCOL`: `http/protobuf` (the default here; Spin
//!   also speaks `grpc`, meridian-host does not and says so at start; `http/json` neither does);
//! - `OTEL_EXPORTER_OTLP_[TRACES_|METRICS_]HEADERS`: `key=value,…`, values percent-decoded;
//! - `OTEL_EXPORTER_OTLP_[TRACES_|METRICS_]TIMEOUT`: milliseconds per export (10000);
//! - `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`: the resource (`service.name` defaults to
//!   `meridian-host`);
//! - `OTEL_BSP_SCHEDULE_DELAY` (5000 ms) and `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` (512): spans and
//!   the requests' metrics are each sent in batches, as the OpenTelemetry SDKs' batch
//!   processors send them (one export of many requests, not a request per request);
//! - `OTEL_SDK_DISABLED=true` turns it all off.
//!
//! Plain `http://` endpoints only (a local collector); spans whose trace is not sampled are not
//! exported. Every export has a deadline; at most 2,048 items wait, past that they are dropped,
//! counted on stderr and in the host's own metric `meridian.host.telemetry.dropped` (a
//! cumulative sum, sent with every batch of metrics). Pending spans and metrics are sent when
//! the host shuts down.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};
use http_body_util::BodyExt;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1 as common;
use opentelemetry_proto::tonic::metrics::v1 as pm;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1 as pt;
use prost::Message;
use tokio::sync::mpsc;
use wasmtime::component::{HasSelf, Linker};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit/wasi-otel",
        world: "wasi:otel/imports",
        require_store_data_send: true,
        with: {
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
            "wasi:io": wasmtime_wasi::p2::bindings::io,
        },
    });
}

use bindings::wasi::otel::{logs, metrics, tracing, types};
use wasmtime_wasi::p2::bindings::clocks::wall_clock::Datetime;

/// Where telemetry goes, read from the environment at start.
#[derive(Clone, Debug)]
struct Target {
    url: String,
    headers: Vec<(String, String)>,
    timeout: Duration,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A signal's target (`TRACES` or `METRICS`), if its endpoint is set.
fn target(signal: &str, path: &str) -> Result<Option<Target>> {
    let own = env(&format!("OTEL_EXPORTER_OTLP_{signal}_ENDPOINT"));
    let url = match (own, env("OTEL_EXPORTER_OTLP_ENDPOINT")) {
        (Some(u), _) => u,
        (None, Some(base)) => format!("{}/{path}", base.trim_end_matches('/')),
        (None, None) => return Ok(None),
    };
    let protocol = env(&format!("OTEL_EXPORTER_OTLP_{signal}_PROTOCOL"))
        .or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_else(|| "http/protobuf".into());
    match protocol.as_str() {
        "http/protobuf" => {}
        "grpc" => bail!(
            "OTEL_EXPORTER_OTLP_PROTOCOL=grpc: meridian-host exports OTLP over http/protobuf only (Spin speaks both); set it to http/protobuf"
        ),
        other => bail!("OTEL_EXPORTER_OTLP_PROTOCOL={other} is not supported: use http/protobuf"),
    }
    if !url.starts_with("http://") {
        bail!("OTLP endpoint {url}: meridian-host sends to plain http:// endpoints only (a local collector)");
    }
    let headers = env(&format!("OTEL_EXPORTER_OTLP_{signal}_HEADERS"))
        .or_else(|| env("OTEL_EXPORTER_OTLP_HEADERS"))
        .map(|h| {
            h.split(',')
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((percent_decode(k.trim()), percent_decode(v.trim())))
                })
                .collect()
        })
        .unwrap_or_default();
    let timeout_ms = env(&format!("OTEL_EXPORTER_OTLP_{signal}_TIMEOUT"))
        .or_else(|| env("OTEL_EXPORTER_OTLP_TIMEOUT"))
        .and_then(|t| t.parse().ok())
        .unwrap_or(10_000u64);
    Ok(Some(Target {
        url,
        headers,
        timeout: Duration::from_millis(timeout_ms),
    }))
}

fn resource() -> Resource {
    let mut attrs: Vec<(String, String)> = Vec::new();
    if let Some(r) = env("OTEL_RESOURCE_ATTRIBUTES") {
        for kv in r.split(',') {
            if let Some((k, v)) = kv.split_once('=') {
                attrs.push((percent_decode(k.trim()), percent_decode(v.trim())));
            }
        }
    }
    let name = env("OTEL_SERVICE_NAME")
        .or_else(|| {
            attrs
                .iter()
                .find(|(k, _)| k == "service.name")
                .map(|(_, v)| v.clone())
        })
        .unwrap_or_else(|| "meridian-host".into());
    attrs.retain(|(k, _)| k != "service.name");
    attrs.insert(0, ("service.name".into(), name));
    attrs.push(("telemetry.sdk.name".into(), "meridian-host".into()));
    Resource {
        attributes: attrs.into_iter().map(|(k, v)| kv(k, string(v))).collect(),
        ..Default::default()
    }
}

fn string(s: String) -> common::AnyValue {
    common::AnyValue {
        value: Some(common::any_value::Value::StringValue(s)),
    }
}

fn kv(key: String, value: common::AnyValue) -> common::KeyValue {
    common::KeyValue {
        key,
        value: Some(value),
        ..Default::default()
    }
}

/// A `wasi:otel` attribute value (JSON text) as OTLP's.
fn any_value(json: &str) -> common::AnyValue {
    use common::any_value::Value as V;
    fn of(v: serde_json::Value) -> Option<V> {
        Some(match v {
            serde_json::Value::String(s) => V::StringValue(s),
            serde_json::Value::Bool(b) => V::BoolValue(b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => V::IntValue(i),
                None => V::DoubleValue(n.as_f64()?),
            },
            serde_json::Value::Array(items) => V::ArrayValue(common::ArrayValue {
                values: items
                    .into_iter()
                    .map(|i| common::AnyValue { value: of(i) })
                    .collect(),
            }),
            serde_json::Value::Object(m) => V::KvlistValue(common::KeyValueList {
                values: m
                    .into_iter()
                    .map(|(k, v)| kv(k, common::AnyValue { value: of(v) }))
                    .collect(),
            }),
            serde_json::Value::Null => return None,
        })
    }
    match serde_json::from_str::<serde_json::Value>(json) {
        Ok(v) => common::AnyValue { value: of(v) },
        // Not JSON: kept as the text it is.
        Err(_) => string(json.to_string()),
    }
}

fn attrs(list: Vec<types::KeyValue>) -> Vec<common::KeyValue> {
    list.into_iter()
        .map(|a| kv(a.key, any_value(&a.value)))
        .collect()
}

fn nanos(d: Datetime) -> u64 {
    d.seconds
        .saturating_mul(1_000_000_000)
        .saturating_add(d.nanoseconds.into())
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn scope(s: types::InstrumentationScope) -> common::InstrumentationScope {
    common::InstrumentationScope {
        name: s.name,
        version: s.version.unwrap_or_default(),
        attributes: attrs(s.attributes),
        ..Default::default()
    }
}

enum Item {
    Span(Box<(common::InstrumentationScope, pt::Span)>),
    Metrics(Box<pm::ResourceMetrics>),
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// The exporter: a queue and the task that sends it.
pub struct Exporter {
    tx: mpsc::Sender<Item>,
    /// Items the full queue turned away; exported as `meridian.host.telemetry.dropped`.
    dropped: Arc<AtomicU64>,
    traces: bool,
    metrics: bool,
}

impl Exporter {
    /// From the environment, as Spin reads it; `None` when no endpoint is set (or the SDK is
    /// disabled).
    pub fn from_env() -> Result<Option<Arc<Exporter>>> {
        if env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        let traces = target("TRACES", "v1/traces")?;
        let metrics = target("METRICS", "v1/metrics")?;
        if traces.is_none() && metrics.is_none() {
            return Ok(None);
        }
        let delay = Duration::from_millis(
            env("OTEL_BSP_SCHEDULE_DELAY")
                .and_then(|v| v.parse().ok())
                .unwrap_or(5000),
        );
        let batch = env("OTEL_BSP_MAX_EXPORT_BATCH_SIZE")
            .and_then(|v| v.parse().ok())
            .unwrap_or(512usize)
            .max(1);
        let (tx, rx) = mpsc::channel(2048);
        let dropped = Arc::new(AtomicU64::new(0));
        let exporter = Arc::new(Exporter {
            tx,
            dropped: dropped.clone(),
            traces: traces.is_some(),
            metrics: metrics.is_some(),
        });
        let targets = Targets {
            traces,
            metrics,
            resource: resource(),
            dropped,
            started: now_nanos(),
        };
        tokio::spawn(run(rx, targets, delay, batch));
        Ok(Some(exporter))
    }

    pub fn describe(&self) -> String {
        let what: Vec<&str> = [(self.traces, "traces"), (self.metrics, "metrics")]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, w)| *w)
            .collect();
        format!("OTLP http/protobuf export of {}", what.join(" and "))
    }

    fn push(&self, item: Item) {
        if self.tx.try_send(item).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                eprintln!("meridian-host: telemetry queue full: {n} items dropped so far");
            }
        }
    }

    fn span(&self, scope: common::InstrumentationScope, span: pt::Span) {
        if self.traces {
            self.push(Item::Span(Box::new((scope, span))));
        }
    }

    /// Sends what is pending, waiting at most `within`.
    pub async fn flush(&self, within: Duration) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(Item::Flush(tx)).await.is_ok() {
            let _ = tokio::time::timeout(within, rx).await;
        }
    }
}

async fn post(client: &Client, t: &Target, body: Vec<u8>) {
    let mut req = hyper::Request::post(&t.url).header("content-type", "application/x-protobuf");
    for (k, v) in &t.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let Ok(req) = req.body(http_body_util::Full::new(bytes::Bytes::from(body))) else {
        eprintln!("meridian-host: OTLP export to {}: invalid request", t.url);
        return;
    };
    match tokio::time::timeout(t.timeout, async {
        let resp = client.request(req).await?;
        let status = resp.status();
        let _ = resp.into_body().collect().await;
        Ok::<_, anyhow::Error>(status)
    })
    .await
    {
        Ok(Ok(s)) if s.is_success() => {}
        Ok(Ok(s)) => eprintln!("meridian-host: OTLP export to {}: status {s}", t.url),
        Ok(Err(e)) => eprintln!("meridian-host: OTLP export to {}: {e}", t.url),
        Err(_) => eprintln!("meridian-host: OTLP export to {}: timed out", t.url),
    }
}

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<bytes::Bytes>,
>;

/// Where the queue goes, and what the host says of itself.
struct Targets {
    traces: Option<Target>,
    metrics: Option<Target>,
    resource: Resource,
    dropped: Arc<AtomicU64>,
    /// When counting began, for the dropped items' cumulative sum.
    started: u64,
}

impl Targets {
    async fn send_spans(
        &self,
        client: &Client,
        pending: Vec<(common::InstrumentationScope, pt::Span)>,
    ) {
        let Some(t) = &self.traces else { return };
        if pending.is_empty() {
            return;
        }
        let mut scopes: Vec<pt::ScopeSpans> = Vec::new();
        for (scope, span) in pending {
            match scopes.iter_mut().find(|s| s.scope.as_ref() == Some(&scope)) {
                Some(s) => s.spans.push(span),
                None => scopes.push(pt::ScopeSpans {
                    scope: Some(scope),
                    spans: vec![span],
                    ..Default::default()
                }),
            }
        }
        let req = ExportTraceServiceRequest {
            resource_spans: vec![pt::ResourceSpans {
                resource: Some(self.resource.clone()),
                scope_spans: scopes,
                ..Default::default()
            }],
        };
        post(client, t, req.encode_to_vec()).await;
    }

    /// The requests' metrics in one export, as the OpenTelemetry SDKs' batch processors send
    /// them, with the host's own count of the items its queue dropped.
    async fn send_metrics(&self, client: &Client, pending: Vec<pm::ResourceMetrics>) {
        let Some(t) = &self.metrics else { return };
        if pending.is_empty() {
            return;
        }
        let mut out: Vec<pm::ResourceMetrics> = Vec::with_capacity(pending.len() + 1);
        for mut m in pending {
            // The host's resource, with what the component says of itself added.
            let mut r = self.resource.clone();
            if let Some(own) = m.resource.take() {
                for a in own.attributes {
                    if !r.attributes.iter().any(|b| b.key == a.key) {
                        r.attributes.push(a);
                    }
                }
            }
            m.resource = Some(r);
            out.push(m);
        }
        out.push(pm::ResourceMetrics {
            resource: Some(self.resource.clone()),
            scope_metrics: vec![pm::ScopeMetrics {
                scope: Some(common::InstrumentationScope {
                    name: "meridian-host".into(),
                    ..Default::default()
                }),
                metrics: vec![pm::Metric {
                    name: "meridian.host.telemetry.dropped".into(),
                    description:
                        "Spans and metrics the host's export queue dropped because it was full"
                            .into(),
                    unit: "{item}".into(),
                    data: Some(pm::metric::Data::Sum(pm::Sum {
                        data_points: vec![pm::NumberDataPoint {
                            start_time_unix_nano: self.started,
                            time_unix_nano: now_nanos(),
                            value: Some(pm::number_data_point::Value::AsInt(
                                self.dropped.load(Ordering::Relaxed) as i64,
                            )),
                            ..Default::default()
                        }],
                        aggregation_temporality: pm::AggregationTemporality::Cumulative as i32,
                        is_monotonic: true,
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        });
        let req = ExportMetricsServiceRequest {
            resource_metrics: out,
        };
        post(client, t, req.encode_to_vec()).await;
    }
}

impl Targets {
    /// Everything pending: at the schedule, a flush, or shutdown.
    /// Takes what `spans` and `metrics` hold, leaving them empty.
    async fn send_all(
        &self,
        client: &Client,
        spans: &mut Vec<(common::InstrumentationScope, pt::Span)>,
        metrics: &mut Vec<pm::ResourceMetrics>,
    ) {
        self.send_spans(client, std::mem::take(spans)).await;
        self.send_metrics(client, std::mem::take(metrics)).await;
    }
}

/// Sends what the queue holds: spans and metrics each in batches of `batch` (or whatever
/// waited `delay`), and everything at a flush or when the host shuts down.
async fn run(mut rx: mpsc::Receiver<Item>, targets: Targets, delay: Duration, batch: usize) {
    let client: Client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let mut spans: Vec<(common::InstrumentationScope, pt::Span)> = Vec::new();
    let mut metrics: Vec<pm::ResourceMetrics> = Vec::new();
    loop {
        let item = match tokio::time::timeout(delay, rx.recv()).await {
            Ok(Some(item)) => item,
            // The schedule is due (a timeout) or the host is shutting down (the queue closed).
            due_or_closed => {
                targets.send_all(&client, &mut spans, &mut metrics).await;
                if due_or_closed.is_ok() {
                    return;
                }
                continue;
            }
        };
        match item {
            Item::Span(s) => {
                spans.push(*s);
                if spans.len() >= batch {
                    targets
                        .send_spans(&client, std::mem::take(&mut spans))
                        .await;
                }
            }
            Item::Metrics(m) => {
                metrics.push(*m);
                if metrics.len() >= batch {
                    targets
                        .send_metrics(&client, std::mem::take(&mut metrics))
                        .await;
                }
            }
            Item::Flush(done) => {
                targets.send_all(&client, &mut spans, &mut metrics).await;
                let _ = done.send(());
            }
        }
    }
}

/// A span context: ids as bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Context {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
}

fn random_bytes<const N: usize>() -> [u8; N] {
    // Ids need to be unique, not secret: the time and a counter through a hash.
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut out = [0u8; N];
    for chunk in out.chunks_mut(8) {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(now_nanos());
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        let v = h.finish().to_be_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
    out
}

fn parse_traceparent(v: &str) -> Option<Context> {
    let mut parts = v.trim().split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let span = parts.next()?;
    let flags = parts.next()?;
    if version.len() != 2 || version == "ff" || trace.len() != 32 || span.len() != 16 {
        return None;
    }
    let lower = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !lower(trace) || !lower(span) {
        return None;
    }
    let mut c = Context {
        trace_id: [0; 16],
        span_id: [0; 8],
        sampled: u8::from_str_radix(flags.get(..2)?, 16).ok()? & 1 == 1,
    };
    hex::decode_to_slice(trace, &mut c.trace_id).ok()?;
    hex::decode_to_slice(span, &mut c.span_id).ok()?;
    (c.trace_id != [0; 16] && c.span_id != [0; 8]).then_some(c)
}

/// The host's span for one request: started when the request arrives, a child of the caller's
/// `traceparent` when it sent exactly one valid one.
pub struct RequestSpan {
    pub context: Context,
    parent: Option<[u8; 8]>,
    start: u64,
    method: String,
    path: String,
}

impl RequestSpan {
    pub fn start<B>(req: &hyper::Request<B>) -> RequestSpan {
        let mut given = req.headers().get_all("traceparent").iter();
        let caller = match (given.next(), given.next()) {
            (Some(v), None) => v.to_str().ok().and_then(parse_traceparent),
            _ => None,
        };
        RequestSpan {
            context: Context {
                trace_id: caller.map_or_else(random_bytes, |c| c.trace_id),
                span_id: random_bytes(),
                sampled: caller.is_none_or(|c| c.sampled),
            },
            parent: caller.map(|c| c.span_id),
            start: now_nanos(),
            method: req.method().to_string(),
            path: req.uri().path().to_string(),
        }
    }

    /// Ends the span: the response's status (`None`: the component failed before giving one).
    pub fn end(self, exporter: &Exporter, status: Option<u16>) {
        if !self.context.sampled {
            return;
        }
        let mut attributes = vec![
            kv("http.request.method".into(), string(self.method.clone())),
            kv("url.path".into(), string(self.path)),
            kv("http.route".into(), string("/...".into())),
        ];
        if let Some(s) = status {
            attributes.push(kv(
                "http.response.status_code".into(),
                common::AnyValue {
                    value: Some(common::any_value::Value::IntValue(s.into())),
                },
            ));
        }
        let failed = status.is_none_or(|s| s >= 500);
        let span = pt::Span {
            trace_id: self.context.trace_id.to_vec(),
            span_id: self.context.span_id.to_vec(),
            parent_span_id: self.parent.map(|p| p.to_vec()).unwrap_or_default(),
            name: format!("{} /...", self.method),
            kind: pt::span::SpanKind::Server as i32,
            start_time_unix_nano: self.start,
            end_time_unix_nano: now_nanos(),
            attributes,
            status: Some(pt::Status {
                code: if failed {
                    pt::status::StatusCode::Error as i32
                } else {
                    pt::status::StatusCode::Unset as i32
                },
                message: String::new(),
            }),
            flags: 1,
            ..Default::default()
        };
        exporter.span(
            common::InstrumentationScope {
                name: "meridian-host".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                ..Default::default()
            },
            span,
        );
    }
}

/// What an instance's `wasi:otel` calls see: the exporter and the host's span of the request
/// the instance serves.
#[derive(Default)]
pub struct Guest {
    pub exporter: Option<Arc<Exporter>>,
    pub request: Option<Context>,
    /// Spans the component started and has not ended.
    started: HashMap<String, ()>,
}

impl Guest {
    pub fn new(exporter: Option<Arc<Exporter>>, request: Option<Context>) -> Guest {
        Guest {
            exporter,
            request,
            started: HashMap::new(),
        }
    }
}

pub trait HasOtel {
    fn otel(&mut self) -> &mut Guest;
}

/// Links `wasi:otel` (Spin does so only with `--experimental-wasi-otel`).
pub fn add_to_linker<T: HasOtel + Send + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    fn get<T: HasOtel>(t: &mut T) -> &mut Guest {
        t.otel()
    }
    types::add_to_linker::<T, HasSelf<Guest>>(linker, get)?;
    tracing::add_to_linker::<T, HasSelf<Guest>>(linker, get)?;
    metrics::add_to_linker::<T, HasSelf<Guest>>(linker, get)?;
    logs::add_to_linker::<T, HasSelf<Guest>>(linker, get)?;
    Ok(())
}

impl types::Host for Guest {}

impl tracing::Host for Guest {
    fn on_start(&mut self, context: tracing::SpanContext) {
        self.started.insert(context.span_id, ());
    }

    fn on_end(&mut self, span: tracing::SpanData) {
        // As Spin: a span must have been started to be ended.
        if self.started.remove(&span.span_context.span_id).is_none() {
            eprintln!("meridian-host: the component ended a span it did not start");
            return;
        }
        let Some(exporter) = &self.exporter else {
            return;
        };
        if !span
            .span_context
            .trace_flags
            .contains(tracing::TraceFlags::SAMPLED)
        {
            return;
        }
        let id = |h: &str| hex::decode(h).unwrap_or_default();
        let out = pt::Span {
            trace_id: id(&span.span_context.trace_id),
            span_id: id(&span.span_context.span_id),
            trace_state: span
                .span_context
                .trace_state
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(","),
            parent_span_id: id(&span.parent_span_id),
            name: span.name,
            kind: match span.span_kind {
                tracing::SpanKind::Client => pt::span::SpanKind::Client,
                tracing::SpanKind::Server => pt::span::SpanKind::Server,
                tracing::SpanKind::Producer => pt::span::SpanKind::Producer,
                tracing::SpanKind::Consumer => pt::span::SpanKind::Consumer,
                tracing::SpanKind::Internal => pt::span::SpanKind::Internal,
            } as i32,
            start_time_unix_nano: nanos(span.start_time),
            end_time_unix_nano: nanos(span.end_time),
            attributes: attrs(span.attributes),
            dropped_attributes_count: span.dropped_attributes,
            events: span
                .events
                .into_iter()
                .map(|e| pt::span::Event {
                    time_unix_nano: nanos(e.time),
                    name: e.name,
                    attributes: attrs(e.attributes),
                    ..Default::default()
                })
                .collect(),
            dropped_events_count: span.dropped_events,
            links: span
                .links
                .into_iter()
                .map(|l| pt::span::Link {
                    trace_id: id(&l.span_context.trace_id),
                    span_id: id(&l.span_context.span_id),
                    attributes: attrs(l.attributes),
                    ..Default::default()
                })
                .collect(),
            dropped_links_count: span.dropped_links,
            status: Some(match span.status {
                tracing::Status::Unset => pt::Status::default(),
                tracing::Status::Ok => pt::Status {
                    code: pt::status::StatusCode::Ok as i32,
                    message: String::new(),
                },
                tracing::Status::Error(m) => pt::Status {
                    code: pt::status::StatusCode::Error as i32,
                    message: m,
                },
            }),
            flags: 1,
        };
        exporter.span(scope(span.instrumentation_scope), out);
    }

    fn outer_span_context(&mut self) -> tracing::SpanContext {
        let c = self.request.unwrap_or(Context {
            trace_id: [0; 16],
            span_id: [0; 8],
            sampled: false,
        });
        tracing::SpanContext {
            trace_id: hex::encode(c.trace_id),
            span_id: hex::encode(c.span_id),
            trace_flags: if c.sampled {
                tracing::TraceFlags::SAMPLED
            } else {
                tracing::TraceFlags::empty()
            },
            is_remote: false,
            trace_state: Vec::new(),
        }
    }
}

fn number(n: metrics::MetricNumber) -> pm::number_data_point::Value {
    match n {
        metrics::MetricNumber::F64(v) => pm::number_data_point::Value::AsDouble(v),
        metrics::MetricNumber::S64(v) => pm::number_data_point::Value::AsInt(v),
        metrics::MetricNumber::U64(v) => pm::number_data_point::Value::AsInt(v as i64),
    }
}

fn as_f64(n: metrics::MetricNumber) -> f64 {
    match n {
        metrics::MetricNumber::F64(v) => v,
        metrics::MetricNumber::S64(v) => v as f64,
        metrics::MetricNumber::U64(v) => v as f64,
    }
}

fn temporality(t: metrics::Temporality) -> i32 {
    match t {
        metrics::Temporality::Cumulative => pm::AggregationTemporality::Cumulative as i32,
        metrics::Temporality::Delta | metrics::Temporality::LowMemory => {
            pm::AggregationTemporality::Delta as i32
        }
    }
}

/// One point of a sum or a gauge.
fn number_point(
    attributes: Vec<types::KeyValue>,
    value: metrics::MetricNumber,
    start_ns: u64,
    time_ns: u64,
) -> pm::NumberDataPoint {
    pm::NumberDataPoint {
        attributes: attrs(attributes),
        start_time_unix_nano: start_ns,
        time_unix_nano: time_ns,
        value: Some(number(value)),
        ..Default::default()
    }
}

fn sum(s: metrics::Sum) -> pm::metric::Data {
    let (start, time) = (nanos(s.start_time), nanos(s.time));
    pm::metric::Data::Sum(pm::Sum {
        data_points: s
            .data_points
            .into_iter()
            .map(|p| number_point(p.attributes, p.value, start, time))
            .collect(),
        aggregation_temporality: temporality(s.temporality),
        is_monotonic: s.is_monotonic,
    })
}

fn gauge(g: metrics::Gauge) -> pm::metric::Data {
    let (start, time) = (g.start_time.map_or(0, nanos), nanos(g.time));
    pm::metric::Data::Gauge(pm::Gauge {
        data_points: g
            .data_points
            .into_iter()
            .map(|p| number_point(p.attributes, p.value, start, time))
            .collect(),
    })
}

fn histogram(h: metrics::Histogram) -> pm::metric::Data {
    pm::metric::Data::Histogram(pm::Histogram {
        data_points: h
            .data_points
            .into_iter()
            .map(|p| pm::HistogramDataPoint {
                attributes: attrs(p.attributes),
                start_time_unix_nano: nanos(h.start_time),
                time_unix_nano: nanos(h.time),
                count: p.count,
                sum: Some(as_f64(p.sum)),
                bucket_counts: p.bucket_counts,
                explicit_bounds: p.bounds,
                min: p.min.map(as_f64),
                max: p.max.map(as_f64),
                ..Default::default()
            })
            .collect(),
        aggregation_temporality: temporality(h.temporality),
    })
}

impl metrics::Host for Guest {
    fn export(&mut self, m: metrics::ResourceMetrics) -> Result<(), metrics::Error> {
        let Some(exporter) = &self.exporter else {
            return Ok(());
        };
        if !exporter.metrics {
            return Ok(());
        }
        use metrics::MetricData as D;
        let out = pm::ResourceMetrics {
            resource: Some(Resource {
                attributes: attrs(m.resource.attributes),
                ..Default::default()
            }),
            scope_metrics: m
                .scope_metrics
                .into_iter()
                .map(|s| pm::ScopeMetrics {
                    scope: Some(scope(s.scope)),
                    metrics: s
                        .metrics
                        .into_iter()
                        .filter_map(|metric| {
                            let data = match metric.data {
                                D::F64Sum(s) | D::U64Sum(s) | D::S64Sum(s) => sum(s),
                                D::F64Gauge(g) | D::U64Gauge(g) | D::S64Gauge(g) => gauge(g),
                                D::F64Histogram(h) | D::U64Histogram(h) | D::S64Histogram(h) => {
                                    histogram(h)
                                }
                                // Not produced by Meridian; not converted here.
                                _ => return None,
                            };
                            Some(pm::Metric {
                                name: metric.name,
                                description: metric.description,
                                unit: metric.unit,
                                data: Some(data),
                                ..Default::default()
                            })
                        })
                        .collect(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        exporter.push(Item::Metrics(Box::new(out)));
        Ok(())
    }
}

impl logs::Host for Guest {
    fn on_emit(&mut self, _data: logs::LogRecord) {
        // Meridian's component writes its log line to stdout; log records are not exported.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_and_values() {
        let c =
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert!(c.sampled);
        assert_eq!(hex::encode(c.span_id), "00f067aa0ba902b7");
        assert!(
            parse_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none()
        );
        assert_eq!(
            any_value("3").value,
            Some(common::any_value::Value::IntValue(3))
        );
        assert_eq!(percent_decode("a%20b"), "a b");
    }
}
