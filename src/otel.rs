//! OpenTelemetry spans and metrics, rendered from the audit [`Record`] once a request is done
//! (telemetry is a view of the record, like the headers and the log line). Pure: the adapter
//! built with `wasi:otel` hands the result to its host.
//!
//! Conventions: the OpenTelemetry GenAI semantic conventions (development status, schema
//! 1.42.0, [`SCHEMA_URL`]) for the inference spans and metrics; everything Meridian adds is
//! under `meridian.`. Never prompt text or keys: the record holds neither.
//!
//! - One span for the request (kind internal, a child of the runtime's span or the caller's),
//!   named `{operation} {model}` after the model the client asked for.
//! - One span per attempt (kind client, a child of the request's, so retries, fallbacks and
//!   hedges are siblings), named `{operation} {upstream model}`; its span id is the one sent
//!   upstream in `traceparent`.
//! - Metrics as deltas of this one request (a serverless instance keeps no aggregate between
//!   requests): `gen_ai.client.inference.duration` and `.time_to_first_chunk` (histograms),
//!   `gen_ai.client.inference.usage.*` (counters), and `meridian.cost`,
//!   `meridian.requests.refused`, `meridian.fallbacks` (counters).
//! - Guards' verdicts on the request's span (`meridian.guards`), as the audit header has them.

use crate::audit::Record;
use crate::trace::to_hex;

/// The semantic conventions the names follow.
pub const SCHEMA_URL: &str = "https://opentelemetry.io/schemas/1.42.0";
/// The instrumentation scope of everything Meridian emits, and its version.
pub const SCOPE: &str = "meridian";
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Explicit histogram bounds the GenAI conventions give for durations, in seconds.
pub const DURATION_BOUNDS: &[f64] = &[
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
/// Explicit histogram bounds the GenAI conventions give for the time to the first chunk.
pub const FIRST_CHUNK_BOUNDS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Strs(Vec<String>),
}

impl Value {
    /// As JSON (how `wasi:otel` 0.2.0-rc.2 carries an attribute's value).
    pub fn json(&self) -> String {
        match self {
            Value::Str(s) => serde_json::Value::from(s.as_str()).to_string(),
            Value::Int(n) => n.to_string(),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map_or_else(|| "null".to_string(), |n| n.to_string()),
            Value::Bool(b) => b.to_string(),
            Value::Strs(v) => serde_json::Value::from(v.clone()).to_string(),
        }
    }
}

pub type Attrs = Vec<(&'static str, Value)>;

#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// `None` for a trace's root.
    pub parent_id: Option<[u8; 8]>,
    pub sampled: bool,
    pub name: String,
    /// Client (an upstream attempt) or internal (the request).
    pub client: bool,
    pub start_unix_ns: u64,
    pub end_unix_ns: u64,
    pub attributes: Attrs,
    /// The span's error status, when it ended in one.
    pub error: Option<String>,
}

impl Span {
    pub fn trace_id_hex(&self) -> String {
        to_hex(&self.trace_id)
    }
    pub fn span_id_hex(&self) -> String {
        to_hex(&self.span_id)
    }
    pub fn parent_id_hex(&self) -> String {
        self.parent_id.map(|p| to_hex(&p)).unwrap_or_default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    U64(u64),
    F64(f64),
}

impl Number {
    pub fn as_f64(self) -> f64 {
        match self {
            Number::U64(n) => n as f64,
            Number::F64(f) => f,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Instrument {
    /// With these explicit bucket bounds.
    Histogram(&'static [f64]),
    /// A monotonic sum.
    Counter,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub name: &'static str,
    pub unit: &'static str,
    pub description: &'static str,
    pub instrument: Instrument,
    /// One data point per distinct set of attributes.
    pub points: Vec<(Attrs, Number)>,
}

/// One request's telemetry.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Telemetry {
    /// The request's span first, then its attempts' in the order they were sent.
    pub spans: Vec<Span>,
    pub metrics: Vec<Metric>,
    /// The request's start and end (the metrics' delta interval).
    pub start_unix_ns: u64,
    pub end_unix_ns: u64,
}

/// The GenAI operation an endpoint performs, when it is an inference endpoint.
pub fn operation(method: &str, path: &str) -> Option<&'static str> {
    if method != "POST" {
        return None;
    }
    Some(match path {
        "/v1/chat/completions" | "/v1/messages" | "/v1/responses" => "chat",
        "/v1/completions" => "text_completion",
        "/v1/embeddings" => "embeddings",
        _ => return None,
    })
}

/// The GenAI conventions' name for a provider: a well-known one by its API's host or wire, else
/// the policy's own id for it.
pub fn provider_name<'a>(policy: Option<&'a crate::policy::Policy>, id: &'a str) -> &'a str {
    use crate::policy::WireKind;
    let Some(p) = policy.and_then(|p| p.providers.iter().find(|p| p.id.0.as_ref() == id)) else {
        return id;
    };
    let host = url_host(p.base_url.as_str());
    let known = [
        ("api.openai.com", "openai"),
        ("api.anthropic.com", "anthropic"),
        ("api.groq.com", "groq"),
        ("api.mistral.ai", "mistral_ai"),
        ("api.deepseek.com", "deepseek"),
        ("api.x.ai", "x_ai"),
        ("api.perplexity.ai", "perplexity"),
        ("api.cohere.com", "cohere"),
        ("generativelanguage.googleapis.com", "gcp.gemini"),
    ];
    if let Some((_, name)) = known.iter().find(|(h, _)| *h == host) {
        return name;
    }
    match p.kind {
        WireKind::Azure => "azure.ai.openai",
        WireKind::Anthropic if host.ends_with(".anthropic.com") => "anthropic",
        _ => id,
    }
}

fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

fn s(v: &str) -> Value {
    Value::Str(v.to_string())
}

/// Renders a finished request's spans and metrics. `wall_end_ms` and `mono_end_ms` are the wall
/// clock (milliseconds since the Unix epoch) and the transport's monotonic clock at the end:
/// the record's times are on the monotonic clock.
pub fn render(
    record: &Record,
    policy: Option<&crate::policy::Policy>,
    wall_end_ms: u64,
    mono_end_ms: u64,
) -> Telemetry {
    let Some(trace) = &record.trace else {
        return Telemetry::default();
    };
    let v = View::of(record, policy, wall_end_ms, mono_end_ms);
    let mut attempts: Vec<&crate::transport::Attempt> = record.attempts.iter().collect();
    attempts.sort_by_key(|a| a.seq);
    let sampled = trace.flags & 1 == 1;
    let mut spans = vec![Span {
        trace_id: trace.trace_id,
        span_id: trace.span_id,
        parent_id: trace.parent_id,
        sampled,
        name: match (v.op, v.model) {
            (Some(op), Some(m)) => format!("{op} {m}"),
            (Some(op), None) => op.to_string(),
            _ => format!("{} {}", record.method, record.path),
        },
        client: false,
        start_unix_ns: v.start_ns,
        end_unix_ns: v.end_ns,
        attributes: request_attrs(record, &v),
        error: v
            .error_type
            .clone()
            .filter(|_| record.status >= 400 || v.stream),
    }];
    spans.extend(attempt_spans(record, &v, trace, &attempts));
    let mut metrics = request_metrics(record, &v);
    metrics.extend(refusal_metric(record, &v));
    metrics.extend(fallback_metric(&v, &attempts));
    Telemetry {
        spans,
        metrics,
        start_unix_ns: v.start_ns,
        end_unix_ns: v.end_ns,
    }
}

/// What every rendering of one record reads: its times on the wall clock, its operation, model
/// and provider, and the attributes every span and metric shares.
struct View<'r> {
    policy: Option<&'r crate::policy::Policy>,
    wall_end_ms: u64,
    mono_end_ms: u64,
    start_ns: u64,
    end_ns: u64,
    op: Option<&'static str>,
    model: Option<&'r str>,
    provider: Option<&'r str>,
    gen_provider: Option<&'r str>,
    stream: bool,
    /// Time to the first chunk of a stream: from the request's start to its answering
    /// attempt's first event.
    first_chunk_s: Option<f64>,
    error_type: Option<String>,
    common: Attrs,
}

impl<'r> View<'r> {
    fn of(
        record: &'r Record,
        policy: Option<&'r crate::policy::Policy>,
        wall_end_ms: u64,
        mono_end_ms: u64,
    ) -> View<'r> {
        let op = operation(&record.method, &record.path);
        let provider = record.provider.as_deref();
        let stream = record.stream_outcome.is_some();
        let answered = record.attempts.iter().find(|a| a.failure.is_none());
        let mut common: Attrs = Vec::new();
        if let Some(op) = op {
            common.push(("gen_ai.operation.name", s(op)));
        }
        let mut v = View {
            policy,
            wall_end_ms,
            mono_end_ms,
            start_ns: 0,
            end_ns: wall_end_ms.saturating_mul(1_000_000),
            op,
            model: record.model.as_deref(),
            provider,
            gen_provider: provider.map(|p| provider_name(policy, p)),
            stream,
            first_chunk_s: answered
                .filter(|_| stream)
                .map(|a| (a.at_ms + a.ms).saturating_sub(record.started_ms) as f64 / 1000.0),
            error_type: match (record.error_code, record.stream_outcome) {
                (Some(code), _) => Some(code.to_string()),
                (None, Some(o)) if o != "done" => Some(o.to_string()),
                _ if record.status >= 500 => Some(record.status.to_string()),
                _ => None,
            },
            common,
        };
        v.start_ns = v.to_wall_ns(record.started_ms);
        v
    }

    /// A time on the monotonic clock, on the wall clock in nanoseconds.
    fn to_wall_ns(&self, mono_ms: u64) -> u64 {
        self.wall_end_ms
            .saturating_sub(self.mono_end_ms.saturating_sub(mono_ms))
            .saturating_mul(1_000_000)
    }
}

/// The request span's attributes: the GenAI conventions' and Meridian's own.
fn request_attrs(record: &Record, v: &View<'_>) -> Attrs {
    let mut req: Attrs = v.common.clone();
    if let Some(m) = v.model {
        req.push(("gen_ai.request.model", s(m)));
    }
    if let Some(p) = v.gen_provider {
        req.push(("gen_ai.provider.name", s(p)));
    }
    if let Some(m) = &record.upstream_model {
        req.push(("gen_ai.response.model", s(m)));
    }
    if let Some(u) = record.usage {
        usage_attrs(&mut req, &u);
    }
    if let Some(t) = v.first_chunk_s {
        req.push(("gen_ai.response.time_to_first_chunk", Value::Float(t)));
    }
    if let Some(e) = &v.error_type {
        req.push(("error.type", s(e)));
    }
    req.push(("http.request.method", s(&record.method)));
    req.push(("url.path", s(&record.path)));
    req.push((
        "http.response.status_code",
        Value::Int(record.status.into()),
    ));
    req.push(("meridian.request_id", s(&record.request_id)));
    if let Some(p) = &record.policy {
        req.push(("meridian.policy", s(p)));
    }
    if let Some(c) = &record.caller {
        req.push(("meridian.tenant", s(c.name())));
    }
    if let Some(l) = &record.location {
        req.push(("meridian.client.country", s(l.country.as_str())));
    }
    if let Some(src) = &record.country_source {
        req.push(("meridian.client.country_source", s(src)));
    }
    if let Some(r) = &record.rules {
        req.push(("meridian.rules", Value::Strs(r.clone())));
    }
    if !record.excluded.is_empty() {
        let why = record
            .excluded
            .iter()
            .enumerate()
            .map(|(i, p)| {
                format!(
                    "{p}: {}",
                    record.excluded_kinds.get(i).copied().unwrap_or("excluded")
                )
            })
            .collect();
        req.push(("meridian.providers.excluded", Value::Strs(why)));
    }
    if let Some(p) = v.provider {
        req.push(("meridian.provider", s(p)));
    }
    if let Some(m) = &record.served_model {
        req.push(("meridian.served_model", s(m)));
    }
    if let Some(j) = &record.jurisdiction {
        req.push(("meridian.provider.jurisdiction", s(j)));
    }
    if record.rules.is_some() {
        req.push((
            "meridian.attempts",
            Value::Int(record.attempts.len() as i64),
        ));
    }
    if record.attempts.iter().any(|a| a.hedge) {
        req.push(("meridian.hedged", Value::Bool(true)));
    }
    if let Some(p) = &record.pii {
        if let Some(found) = p.found.as_object() {
            if !found.is_empty() {
                req.push((
                    "meridian.pii.kinds",
                    Value::Strs(found.keys().cloned().collect()),
                ));
            }
        }
        req.push(("meridian.pii.action", s(p.action)));
    }
    if !record.capabilities.is_empty() {
        let caps = record.capabilities.iter().map(|c| c.to_string()).collect();
        req.push(("meridian.capabilities", Value::Strs(caps)));
    }
    if !record.guards.is_empty() {
        // Each guard's verdict as the audit header has it: `guard:outcome[:label[:score]]`.
        let verdicts = record.guards.iter().map(|g| g.summary()).collect();
        req.push(("meridian.guards", Value::Strs(verdicts)));
    }
    if let Some(cost) = record.cost_usd() {
        req.push(("meridian.cost_usd", Value::Float(cost)));
    }
    if let Some(l) = &record.limits {
        if let Ok(json) = crate::json::to_string(l) {
            req.push(("meridian.limits", Value::Str(json)));
        }
    }
    if !record.cooling.is_empty() {
        req.push((
            "meridian.providers.cooling",
            Value::Strs(record.cooling.clone()),
        ));
    }
    if let Some(o) = record.stream_outcome {
        req.push(("meridian.stream.outcome", s(o)));
    }
    req
}

/// One client span per attempt, children of the request's span: siblings for retries,
/// fallbacks and hedges.
fn attempt_spans(
    record: &Record,
    v: &View<'_>,
    trace: &crate::trace::Trace,
    attempts: &[&crate::transport::Attempt],
) -> Vec<Span> {
    let sampled = trace.flags & 1 == 1;
    let mut spans = Vec::with_capacity(attempts.len());
    for a in attempts {
        let mut at: Attrs = v.common.clone();
        at.push(("gen_ai.request.model", s(&a.model)));
        at.push((
            "gen_ai.provider.name",
            s(provider_name(v.policy, &a.provider)),
        ));
        at.push(("meridian.provider", s(&a.provider)));
        at.push(("meridian.attempt", Value::Int(a.seq.into())));
        if a.hedge {
            at.push(("meridian.attempt.hedge", Value::Bool(true)));
        }
        let failure = a.failure.as_ref().map(|f| f.label());
        match &failure {
            Some(label) => at.push(("error.type", s(label))),
            None => {
                if let Some(m) = &record.upstream_model {
                    at.push(("gen_ai.response.model", s(m)));
                }
                if let Some(u) = record.usage {
                    usage_attrs(&mut at, &u);
                }
                if v.stream {
                    at.push((
                        "gen_ai.response.time_to_first_chunk",
                        Value::Float(a.ms as f64 / 1000.0),
                    ));
                }
            }
        }
        // The answering attempt lasts until the request ends (a stream is read to its end).
        let end = if a.failure.is_none() {
            v.end_ns
        } else {
            v.to_wall_ns(a.at_ms + a.ms)
        };
        spans.push(Span {
            trace_id: trace.trace_id,
            span_id: trace.attempt_span(a.seq),
            parent_id: Some(trace.span_id),
            sampled,
            name: match v.op {
                Some(op) => format!("{op} {}", a.model),
                None => a.model.clone(),
            },
            client: true,
            start_unix_ns: v.to_wall_ns(a.at_ms),
            end_unix_ns: end.max(v.to_wall_ns(a.at_ms)),
            attributes: at,
            error: failure,
        });
    }
    spans
}

/// This request's contribution to the duration, first-chunk, usage and cost metrics.
fn request_metrics(record: &Record, v: &View<'_>) -> Vec<Metric> {
    let mut metrics = Vec::new();
    if v.op.is_some() {
        let mut dims: Attrs = v.common.clone();
        if let Some(m) = v.model {
            dims.push(("gen_ai.request.model", s(m)));
        }
        if let Some(p) = v.gen_provider {
            dims.push(("gen_ai.provider.name", s(p)));
        }
        if let Some(m) = &record.upstream_model {
            dims.push(("gen_ai.response.model", s(m)));
        }
        if let Some(p) = v.provider {
            dims.push(("meridian.provider", s(p)));
        }
        if let Some(c) = &record.caller {
            dims.push(("meridian.tenant", s(c.name())));
        }
        let mut with_error = dims.clone();
        if let Some(e) = &v.error_type {
            with_error.push(("error.type", s(e)));
        }
        metrics.push(Metric {
            name: "gen_ai.client.inference.duration",
            unit: "s",
            description: "Duration of the inference request, as Meridian served it",
            instrument: Instrument::Histogram(DURATION_BOUNDS),
            points: vec![(
                with_error,
                Number::F64((v.end_ns.saturating_sub(v.start_ns)) as f64 / 1e9),
            )],
        });
        if let Some(t) = v.first_chunk_s {
            metrics.push(Metric {
                name: "gen_ai.client.inference.time_to_first_chunk",
                unit: "s",
                description: "Time from the request to the first chunk of a streamed answer",
                instrument: Instrument::Histogram(FIRST_CHUNK_BOUNDS),
                points: vec![(dims.clone(), Number::F64(t))],
            });
        }
        if let Some(u) = record.usage {
            // Input and output always; the cache counters when the provider reported any.
            for (name, n, always) in [
                (
                    "gen_ai.client.inference.usage.input_tokens",
                    u.prompt_tokens,
                    true,
                ),
                (
                    "gen_ai.client.inference.usage.output_tokens",
                    u.completion_tokens,
                    true,
                ),
                (
                    "gen_ai.client.inference.usage.cache_read.input_tokens",
                    u.cached_tokens,
                    false,
                ),
                (
                    "gen_ai.client.inference.usage.cache_write.input_tokens",
                    u.cache_write_tokens,
                    false,
                ),
            ] {
                if always || n > 0 {
                    metrics.push(Metric {
                        name,
                        unit: "{token}",
                        description: "Tokens the provider reported for the request",
                        instrument: Instrument::Counter,
                        points: vec![(dims.clone(), Number::U64(n))],
                    });
                }
            }
        }
        if let Some(cost) = record.cost_usd() {
            metrics.push(Metric {
                name: "meridian.cost",
                unit: "USD",
                description: "What the request cost at the policy's prices",
                instrument: Instrument::Counter,
                points: vec![(dims.clone(), Number::F64(cost))],
            });
        }
    }
    metrics
}

/// A request Meridian answered with an error, by reason.
fn refusal_metric(record: &Record, v: &View<'_>) -> Option<Metric> {
    if record.status >= 400 {
        if let Some(code) = record.error_code {
            let mut dims: Attrs = v.common.clone();
            dims.push(("meridian.refusal.reason", s(code)));
            dims.push((
                "http.response.status_code",
                Value::Int(record.status.into()),
            ));
            if let Some(m) = v.model {
                dims.push(("gen_ai.request.model", s(m)));
            }
            if let Some(c) = &record.caller {
                dims.push(("meridian.tenant", s(c.name())));
            }
            return Some(Metric {
                name: "meridian.requests.refused",
                unit: "{request}",
                description: "Requests Meridian answered with an error, by reason",
                instrument: Instrument::Counter,
                points: vec![(dims, Number::U64(1))],
            });
        }
    }
    None
}

/// Failed attempts after which Meridian tried another.
fn fallback_metric(v: &View<'_>, attempts: &[&crate::transport::Attempt]) -> Option<Metric> {
    // Fallbacks: each failed attempt (a cancelled hedge is not a failure) that another followed.
    let mut fallbacks: Vec<(Attrs, Number)> = Vec::new();
    for a in attempts {
        let Some(f) = &a.failure else { continue };
        if matches!(
            f,
            crate::transport::Failure::Cancelled | crate::transport::Failure::Stopped
        ) {
            continue;
        }
        if !attempts.iter().any(|b| b.seq > a.seq) {
            continue;
        }
        let mut dims: Attrs = v.common.clone();
        dims.push(("meridian.provider", s(&a.provider)));
        dims.push((
            "gen_ai.provider.name",
            s(provider_name(v.policy, &a.provider)),
        ));
        dims.push(("meridian.fallback.reason", s(&f.label())));
        match fallbacks.iter_mut().find(|(d, _)| *d == dims) {
            Some((_, Number::U64(n))) => *n += 1,
            _ => fallbacks.push((dims, Number::U64(1))),
        }
    }
    (!fallbacks.is_empty()).then_some(Metric {
        name: "meridian.fallbacks",
        unit: "{attempt}",
        description: "Failed attempts after which Meridian tried another (a retry or a fallback)",
        instrument: Instrument::Counter,
        points: fallbacks,
    })
}

fn usage_attrs(out: &mut Attrs, u: &crate::usage::Usage) {
    out.push((
        "gen_ai.usage.input_tokens",
        Value::Int(u.prompt_tokens as i64),
    ));
    out.push((
        "gen_ai.usage.output_tokens",
        Value::Int(u.completion_tokens as i64),
    ));
    if u.cached_tokens > 0 {
        out.push((
            "gen_ai.usage.cache_read.input_tokens",
            Value::Int(u.cached_tokens as i64),
        ));
    }
    if u.cache_write_tokens > 0 {
        out.push((
            "gen_ai.usage.cache_write.input_tokens",
            Value::Int(u.cache_write_tokens as i64),
        ));
    }
}

/// A histogram's bucket counts for one value: bucket `i` holds values above bound `i - 1` and
/// up to bound `i`; the last holds values above every bound.
pub fn buckets(bounds: &[f64], value: f64) -> Vec<u64> {
    let mut counts = vec![0; bounds.len() + 1];
    let i = bounds
        .iter()
        .position(|b| value <= *b)
        .unwrap_or(bounds.len());
    counts[i] = 1;
    counts
}
