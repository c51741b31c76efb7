//! Everything audit: the header names (constants, so clients and tests agree), the record one
//! request fills in, the headers it renders and the JSON log line.

pub mod facts;

use serde::Serialize;

use crate::location::{Edge, Location};
use crate::policy::AuditHeaders;
use crate::transport::{Attempt, Failure};
use crate::usage::Usage;

pub const REQUEST_ID: &str = "x-request-id";
pub const PROVIDER: &str = "x-meridian-provider";
pub const UPSTREAM_MODEL: &str = "x-meridian-model";
pub const JURISDICTION: &str = "x-meridian-jurisdiction";
pub const RULES: &str = "x-meridian-rules";
pub const ATTEMPTS: &str = "x-meridian-attempts";
/// Each failed attempt as `provider=reason`, separated by `, `.
pub const FAILURES: &str = "x-meridian-failures";
pub const POLICY: &str = "x-meridian-policy";
pub const COST: &str = "x-meridian-cost-usd";
pub const HEDGED: &str = "x-meridian-hedged";
/// The caller's tenant, or `anonymous`.
pub const TENANT: &str = "x-meridian-tenant";
/// The client's country and where it came from: `DE; header cf-ipcountry`.
pub const CLIENT_COUNTRY: &str = "x-meridian-client-country";
/// Personal data found in the prompt and what was done: `email=1, iban=1; redacted`, `none`.
pub const PII: &str = "x-meridian-pii";
/// The W3C trace id the request belongs to (the caller's, or a new one).
pub const TRACE_ID: &str = "x-meridian-trace-id";
/// The capabilities the request used (`store, web_search`), when it used any.
pub const CAPABILITIES: &str = "x-meridian-capabilities";
/// Unknown fields removed under `unknown_fields = "drop"` (`foo, messages[0].bar`).
pub const DROPPED: &str = "x-meridian-dropped-fields";

/// The public model that served: the one asked for, or the step of its model route.
pub const SERVED_MODEL: &str = "x-meridian-served-model";

/// Meridian's own limits for this request: what was reserved and what is left, or why it was
/// refused or not counted.
pub const LIMITS: &str = "x-meridian-limits";

/// Providers skipped because repeated failures put them into cool-down, and until when.
pub const COOLING: &str = "x-meridian-cooling";

/// The guards that judged the request and their verdicts:
/// `injection:refused:override:0.90, moderation:passed`.
pub const GUARDS: &str = "x-meridian-guards";

/// With `audit_headers = "one"`: every audit header but `x-request-id`, as one structured field
/// dictionary (RFC 9651) whose keys are the header names without `x-meridian-` and whose values
/// are strings, the individual header's text.
pub const AUDIT: &str = "x-meridian-audit";

/// Where the serving provider keeps what it retains, when its entry states a `storage` apart
/// from where it processes (`x-meridian-jurisdiction`).
pub const STORAGE: &str = "x-meridian-storage";

/// The response's signed receipt (`[settings.receipts]`): a JWS, docs/evidence.md.
pub const RECEIPT: &str = "x-meridian-receipt";

/// The pool's replica that served (`[providers.pool]`, docs/pools.md).
pub const REPLICA: &str = "x-meridian-replica";

/// How the pool chose its replica and how fresh the load it chose by was:
/// `prefix; load=fresh 0.8s`.
pub const POOL: &str = "x-meridian-pool";

/// Every audit header, for `Access-Control-Expose-Headers`.
pub const ALL: &[&str] = &[
    REQUEST_ID,
    AUDIT,
    PROVIDER,
    UPSTREAM_MODEL,
    JURISDICTION,
    STORAGE,
    RECEIPT,
    REPLICA,
    POOL,
    RULES,
    ATTEMPTS,
    FAILURES,
    POLICY,
    COST,
    HEDGED,
    TENANT,
    CLIENT_COUNTRY,
    PII,
    CAPABILITIES,
    DROPPED,
    TRACE_ID,
    SERVED_MODEL,
    LIMITS,
    COOLING,
    GUARDS,
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
    "x-ratelimit-limit-usd",
    "x-ratelimit-remaining-usd",
    "x-ratelimit-reset-usd",
    "retry-after",
];

/// How a pool chose its replica, for the audit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PoolChoice {
    /// The pool's provider.
    pub provider: String,
    /// `prefix`, `prefix, spilled past 1 over its bound`, `least_load`.
    pub why: String,
    /// `fresh 0.8s`, `stale 14s (ignored)`, `unmeasured`.
    pub load: String,
    /// Allowed replicas left out: over `max_queue`, or down.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub queued: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub down: Vec<String>,
    /// Replicas whose load this instance learned from their answers since the summary was
    /// measured, and used in its place.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub learned: Vec<String>,
}

/// Header values must be visible ASCII; anything else (from ids or upstream text) is replaced.
pub fn header_safe(s: &str) -> String {
    if visible_ascii(s.as_bytes()) {
        // The common case: nothing to replace, one copy.
        return s.to_string();
    }
    replaced(s)
}

/// [`header_safe`] for a value built for the header: kept as it is when it is safe.
fn header_safe_owned(s: String) -> String {
    if visible_ascii(s.as_bytes()) {
        return s;
    }
    replaced(&s)
}

fn replaced(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii() && visible(c as u8) {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// Whether a byte may stand in a header value: visible ASCII or a space (0x20..=0x7e).
fn visible(b: u8) -> bool {
    (0x20..=0x7e).contains(&b)
}

/// Whether every byte is [`visible`]: eight bytes at a time, since
/// every audit header value is checked on every response.
fn visible_ascii(bytes: &[u8]) -> bool {
    use crate::json::{HIGH, ONES};
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(w);
        let x = u64::from_le_bytes(eight);
        // A byte below 0x20 (the subtraction borrows into its high bit, which it did not
        // have), or 0x7f and above (adding one sets its high bit, or it was set already).
        let low = x.wrapping_sub(0x20 * ONES) & !x & HIGH;
        let high = (x.wrapping_add(ONES) | x) & HIGH;
        if low | high != 0 {
            return false;
        }
    }
    words.remainder().iter().all(|b| visible(*b))
}

/// Replaces anything that looks like a credential (an `sk-…` key, a long run of mixed letters
/// and digits, a masked key fragment such as `sk-proj-****abcd`) with `[masked]`, for text that
/// goes to the log from outside (upstream error bodies).
pub fn mask_keys(text: &str) -> String {
    fn key_like(run: &str) -> bool {
        let lower = run.to_ascii_lowercase();
        let prefixed = ["sk-", "sk_", "pk-", "pk_", "rk-", "key-", "gsk_", "xai-"]
            .iter()
            .any(|p| lower.starts_with(p));
        let letters = run.bytes().any(|b| b.is_ascii_alphabetic());
        let digits = run.bytes().any(|b| b.is_ascii_digit());
        (prefixed && run.len() >= 8)
            || run.contains("***")
            || (run.len() >= 20 && letters && digits)
    }
    let is_key_byte = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '*' | '.');
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        // A sentence's full stop after a key is not part of it.
        let word = run.trim_end_matches('.');
        if key_like(word) {
            out.push_str("[masked]");
            out.push_str(&run[word.len()..]);
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if is_key_byte(c) {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// Personal data in the prompt (kinds and counts, never values) and what was done about it.
#[derive(Debug, Clone, Serialize)]
pub struct PiiRecord {
    /// Kind → count.
    pub found: serde_json::Value,
    /// `email=1, iban=1`, for the header.
    #[serde(skip)]
    pub summary: String,
    /// `refused`, `redacted`, `routed`, `detected` or `none`.
    pub action: &'static str,
    /// Findings replaced with placeholders.
    #[serde(skip_serializing_if = "is_zero")]
    pub redacted: u32,
    /// Whether the originals were put back into the answer.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub restored: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl PiiRecord {
    pub fn header(&self) -> String {
        if self.summary.is_empty() {
            self.action.to_string()
        } else {
            format!("{}; {}", self.summary, self.action)
        }
    }
}

/// Who called, once authentication has run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Anonymous,
    Tenant(String),
}

impl Caller {
    pub fn name(&self) -> &str {
        match self {
            Caller::Anonymous => "anonymous",
            Caller::Tenant(t) => t,
        }
    }
}

/// Everything the audit says about one request: the headers every response carries and the
/// one log line. Filled in as the request goes (`api::serve` owns it); rendered only at the end.
/// Never prompt text, never keys.
#[derive(Debug, Clone, Default)]
pub struct Record {
    pub request_id: String,
    pub method: String,
    /// Without the query.
    pub path: String,
    pub status: u16,
    /// `name@revision+digest` (and the IP table's date), once a policy is in force.
    pub policy: Option<String>,
    pub caller: Option<Caller>,
    pub location: Option<Location>,
    /// `location`'s source in words, rendered once for the header and the log line.
    pub country_source: Option<String>,
    pub model: Option<String>,
    /// The rules that matched, once a decision was made.
    pub rules: Option<Vec<String>>,
    pub candidates: Vec<String>,
    pub excluded: Vec<String>,
    /// What excluded each of `excluded` (its first reason's kind: `residency`, `price`, …).
    pub excluded_kinds: Vec<&'static str>,
    pub attempts: Vec<Attempt>,
    pub provider: Option<String>,
    /// The public model that served (a step of the route when the request named one).
    pub served_model: Option<String>,
    pub upstream_model: Option<String>,
    /// Where the serving provider processes data, as the policy writes it.
    pub jurisdiction: Option<String>,
    /// Where the serving provider keeps what it retains (its `storage`, else `jurisdiction`).
    pub storage: Option<String>,
    /// The pool's replica that served.
    pub replica: Option<String>,
    /// Meridian's own in-flight count this request holds at a replica whose engine exposes no
    /// metrics: given back at the request's end ([`crate::pool::inflight_key`]).
    pub inflight: Option<String>,
    /// How the pool chose (`prefix`, `least_load`, spilled) and the load it chose by
    /// (`fresh 0.8s`, `stale 14s (ignored)`, `unmeasured`), for the first pool tried.
    pub pool: Option<PoolChoice>,
    /// The serving provider's retention (days) and zero data retention, as the catalog states.
    pub retention_days: Option<u32>,
    pub zdr: Option<bool>,
    /// How this request's receipts are signed (`[settings.receipts]`).
    pub seal: Option<crate::receipt::Sealing>,
    /// Prices of the serving model (USD per million tokens), to cost the usage.
    pub prices: crate::usage::Prices,
    pub usage: Option<Usage>,
    pub error_code: Option<&'static str>,
    pub stream_outcome: Option<&'static str>,
    /// An upstream error body (keys masked, cut at 2 KiB): the client got a summary only.
    pub upstream_error: Option<String>,
    /// When the request started, on the transport's monotonic clock.
    pub started_ms: u64,
    /// Set when the policy has personal-data rules.
    pub pii: Option<PiiRecord>,
    /// What the request asked providers to do beyond answering (capability names).
    pub capabilities: Vec<&'static str>,
    /// Unknown fields dropped before forwarding, as JSON paths.
    pub dropped: Vec<String>,
    /// What only the log shows about an error (an invalid policy's errors).
    pub error_detail: Option<String>,
    /// Where the request sits in a W3C trace.
    pub trace: Option<crate::trace::Trace>,
    /// Meridian's own limits: the reservation and its settlement.
    pub limits: Option<crate::limits::Audit>,
    /// Providers this request's failures put into cool-down (`[settings.health]`).
    pub cooled: Vec<String>,
    /// Providers skipped because they are cooling down: `alpha cooling down until …`.
    pub cooling: Vec<String>,
    /// What refused the request once its facts were read: `policy` (the decision), `limits`
    /// (Meridian's own), `health` (every provider cooling down).
    pub refused_by: Option<&'static str>,
    /// What the decision read and chose, for `meridian replay`.
    pub facts: Option<facts::Inputs>,
    /// The guards that judged the request (or could not), in the order they ended.
    pub guards: Vec<crate::guard::Verdict>,
}

impl Record {
    /// Whether the request holds a reservation against its limits that is not settled yet
    /// (`api::settle` settles it).
    pub fn unsettled(&self) -> bool {
        self.limits
            .as_ref()
            .is_some_and(|l| l.hold.is_some() && l.settlement.is_none())
    }

    /// What the request cost: the provider's usage at its prices, and the guards' calls.
    pub fn cost_usd(&self) -> Option<f64> {
        let usage = self.usage.and_then(|u| u.cost(self.prices));
        let guards = self.guards_usd();
        if guards > 0.0 {
            Some(usage.unwrap_or(0.0) + guards)
        } else {
            usage
        }
    }

    /// What the guards' calls cost, at their catalog prices.
    pub fn guards_usd(&self) -> f64 {
        self.guards.iter().map(|g| g.usd).sum()
    }

    /// The audit headers that apply to this response, one per fact or (`AuditHeaders::One`)
    /// `x-request-id` and one `x-meridian-audit` with the same facts.
    pub fn headers(&self, style: AuditHeaders) -> Vec<(String, String)> {
        let each = self.each_header();
        if style == AuditHeaders::Each {
            return each;
        }
        let mut dict = String::with_capacity(each.iter().map(|(k, v)| k.len() + v.len()).sum());
        let mut out = Vec::with_capacity(2);
        for (name, value) in each {
            let Some(key) = name.strip_prefix("x-meridian-") else {
                out.push((name, value));
                continue;
            };
            if !dict.is_empty() {
                dict.push_str(", ");
            }
            dict.push_str(key);
            // An sf-string: the value is visible ASCII and spaces (`header_safe`); `"` and `\`
            // are escaped.
            dict.push_str("=\"");
            for c in value.chars() {
                if c == '"' || c == '\\' {
                    dict.push('\\');
                }
                dict.push(c);
            }
            dict.push('"');
        }
        out.push((AUDIT.to_string(), dict));
        out
    }

    /// The audit headers that apply to this response, one per fact.
    fn each_header(&self) -> Vec<(String, String)> {
        fn put(h: &mut Vec<(String, String)>, name: &str, value: &str) {
            h.push((name.to_string(), header_safe(value)));
        }
        /// A value built for its header is moved into it, not copied.
        fn own(h: &mut Vec<(String, String)>, name: &str, value: String) {
            h.push((name.to_string(), header_safe_owned(value)));
        }
        let mut h = Vec::with_capacity(16);
        put(&mut h, REQUEST_ID, &self.request_id);
        if let Some(t) = &self.trace {
            own(&mut h, TRACE_ID, t.trace_id_hex());
        }
        if let Some(p) = &self.policy {
            put(&mut h, POLICY, p);
        }
        if let Some(c) = &self.caller {
            put(&mut h, TENANT, c.name());
        }
        if let (Some(l), Some(source)) = (&self.location, &self.country_source) {
            own(
                &mut h,
                CLIENT_COUNTRY,
                [l.country.as_str(), "; ", source].concat(),
            );
        }
        if let Some(r) = &self.rules {
            own(&mut h, RULES, r.join(","));
        }
        if let Some(p) = &self.pii {
            own(&mut h, PII, p.header());
        }
        if !self.capabilities.is_empty() {
            own(&mut h, CAPABILITIES, self.capabilities.join(", "));
        }
        if !self.dropped.is_empty() {
            own(&mut h, DROPPED, self.dropped.join(", "));
        }
        if let Some(l) = self.limits.as_ref().and_then(crate::limits::Audit::header) {
            own(&mut h, LIMITS, l);
        }
        if !self.cooling.is_empty() {
            own(&mut h, COOLING, self.cooling.join(", "));
        }
        if !self.guards.is_empty() {
            let mut v = String::new();
            for (i, g) in self.guards.iter().enumerate() {
                if i > 0 {
                    v.push_str(", ");
                }
                g.summary_into(&mut v);
            }
            own(&mut h, GUARDS, v);
        }
        if let Some(p) = &self.provider {
            put(&mut h, PROVIDER, p);
        }
        if let Some(m) = &self.served_model {
            put(&mut h, SERVED_MODEL, m);
        }
        if let Some(m) = &self.upstream_model {
            put(&mut h, UPSTREAM_MODEL, m);
        }
        if let Some(j) = &self.jurisdiction {
            put(&mut h, JURISDICTION, j);
            if let Some(s) = self.storage.as_ref().filter(|s| *s != j) {
                put(&mut h, STORAGE, s);
            }
        }
        if let Some(r) = &self.replica {
            put(&mut h, REPLICA, r);
        }
        if let Some(p) = &self.pool {
            own(&mut h, POOL, format!("{}; load={}", p.why, p.load));
        }
        if self.rules.is_some() {
            put(
                &mut h,
                ATTEMPTS,
                itoa::Buffer::new().format(self.attempts.len()),
            );
        }
        let failures: Vec<String> = self
            .attempts
            .iter()
            .filter_map(|a| {
                a.failure
                    .as_ref()
                    .map(|f| format!("{}={}", a.provider, f.label()))
            })
            .collect();
        if !failures.is_empty() {
            own(&mut h, FAILURES, failures.join(", "));
        }
        if self.attempts.iter().any(|a| a.hedge) {
            put(&mut h, HEDGED, "true");
        }
        if self.stream_outcome.is_none() {
            if let Some(cost) = self.cost_usd() {
                own(&mut h, COST, eight_decimals(cost));
            }
        }
        h
    }

    /// The line written when a stream's first event goes out, before any byte reaches the
    /// client: who is served, by whom, and what is reserved. A line with the same `request_id`
    /// and the request's whole record follows when the stream ends; without it (the client hung
    /// up and the runtime ended the instance, as Spin does under WASI 0.2) the reservation stays
    /// counted in full. It has no `status` and no `facts`, so `meridian report` and
    /// `meridian replay` read the closing line only.
    pub fn opening_line(&self, ts_ms: u64) -> String {
        #[derive(Serialize)]
        struct Opening<'a> {
            ts_ms: u64,
            request_id: &'a str,
            event: &'static str,
            path: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            tenant: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            provider: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            served_model: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            jurisdiction: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            limits: Option<&'a crate::limits::Audit>,
            #[serde(skip_serializing_if = "Option::is_none")]
            trace_id: Option<String>,
        }
        crate::json::to_string(&Opening {
            ts_ms,
            request_id: &self.request_id,
            event: "stream_open",
            path: &self.path,
            tenant: self.caller.as_ref().map(Caller::name),
            provider: self.provider.as_deref(),
            served_model: self.served_model.as_deref(),
            jurisdiction: self.jurisdiction.as_deref(),
            limits: self.limits.as_ref(),
            trace_id: self.trace.as_ref().map(|t| t.trace_id_hex()),
        })
        .unwrap_or_else(|_| "{\"log\":\"unserialisable\"}".into())
    }

    /// The JSON log line, given the wall clock and the monotonic clock at the end.
    pub fn log_line(&self, ts_ms: u64, now_ms: u64) -> String {
        crate::json::to_string(&self.line(ts_ms, now_ms))
            .unwrap_or_else(|_| "{\"log\":\"unserialisable\"}".into())
    }

    /// The log line as a JSON object (what a receipt attests is read from it).
    pub fn log_object(
        &self,
        ts_ms: u64,
        now_ms: u64,
    ) -> serde_json::Map<String, serde_json::Value> {
        match serde_json::to_value(self.line(ts_ms, now_ms)) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        }
    }

    fn line(&self, ts_ms: u64, now_ms: u64) -> LogLine<'_> {
        let attempts: Vec<AttemptLog> = self
            .attempts
            .iter()
            .map(|a| AttemptLog {
                provider: &a.provider,
                replica: a.replica.as_deref(),
                outcome: a
                    .failure
                    .as_ref()
                    .map_or_else(|| "ok".into(), Failure::label),
                ms: a.ms,
                hedge: a.hedge,
                detail: a
                    .failure
                    .as_ref()
                    .and_then(Failure::detail)
                    .map(|d| mask_keys(&d)),
            })
            .collect();
        LogLine {
            ts_ms,
            request_id: &self.request_id,
            method: &self.method,
            path: &self.path,
            status: self.status,
            policy: self.policy.as_deref(),
            tenant: self.caller.as_ref().map(Caller::name),
            model: self.model.as_deref(),
            country: self.location.as_ref().map(|l| l.country.as_str()),
            country_source: self.country_source.as_deref(),
            edge: self.location.as_ref().map(|l| l.edge),
            provider: self.provider.as_deref(),
            served_model: self.served_model.as_deref(),
            upstream_model: self.upstream_model.as_deref(),
            jurisdiction: self.jurisdiction.as_deref(),
            storage: self.storage.as_deref(),
            replica: self.replica.as_deref(),
            pool: self.pool.as_ref(),
            retention_days: self.retention_days,
            zdr: self.zdr,
            rules: self.rules.as_deref().unwrap_or_default(),
            candidates: &self.candidates,
            excluded: &self.excluded,
            attempts,
            error_code: self.error_code,
            stream_outcome: self.stream_outcome,
            upstream_error: self.upstream_error.as_deref(),
            pii: self.pii.as_ref(),
            capabilities: &self.capabilities,
            dropped_fields: &self.dropped,
            error_detail: self.error_detail.as_deref(),
            trace_id: self.trace.as_ref().map(|t| t.trace_id_hex()),
            span_id: self.trace.as_ref().map(|t| t.span_id_hex()),
            parent_span_id: self.trace.as_ref().and_then(|t| t.parent_id_hex()),
            usage: self.usage,
            cost_usd: self.cost_usd(),
            limits: self.limits.as_ref(),
            cooled: &self.cooled,
            cooling: &self.cooling,
            refused_by: self.refused_by,
            facts: self.facts.as_ref(),
            guards: self.guards.iter().map(crate::guard::Verdict::log).collect(),
            duration_ms: now_ms.saturating_sub(self.started_ms),
        }
    }
}

#[derive(Serialize)]
struct AttemptLog<'a> {
    provider: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    replica: Option<&'a str>,
    outcome: String,
    ms: u64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    hedge: bool,
    /// What only the operator sees (e.g. which secret is unset).
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

#[derive(Serialize)]
struct LogLine<'a> {
    ts_ms: u64,
    request_id: &'a str,
    method: &'a str,
    path: &'a str,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    policy: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    country: Option<&'a str>,
    /// Where the country came from, or why it is unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    country_source: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    edge: Option<Edge>,
    #[serde(skip_serializing_if = "Option::is_none")]
    provider: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    served_model: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream_model: Option<&'a str>,
    /// Where the serving provider processes data, as the policy writes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    jurisdiction: Option<&'a str>,
    /// Where it keeps what it retains.
    #[serde(skip_serializing_if = "Option::is_none")]
    storage: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    replica: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pool: Option<&'a PoolChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retention_days: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    zdr: Option<bool>,
    rules: &'a [String],
    candidates: &'a [String],
    excluded: &'a [String],
    attempts: Vec<AttemptLog<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_outcome: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream_error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pii: Option<&'a PiiRecord>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    capabilities: &'a [&'static str],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    dropped_fields: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    error_detail: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    span_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_span_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cost_usd: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    limits: Option<&'a crate::limits::Audit>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    cooled: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    cooling: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    refused_by: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    facts: Option<&'a facts::Inputs>,
    /// Each guard's verdict (never the text it judged).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    guards: Vec<crate::guard::VerdictLog<'a>>,
    duration_ms: u64,
}

/// `v` with eight decimals, the bytes `format!("{v:.8}")` writes (the exact binary value
/// rounded to the nearest, a tie to the even digit; the sign of any negative value, zero
/// included), without `fmt`: the cost header is the only float a chat request formats.
fn eight_decimals(v: f64) -> String {
    const SCALE: u128 = 100_000_000;
    let bits = v.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    let fraction = bits & ((1 << 52) - 1);
    let (m, e) = match biased {
        0x7ff => return format!("{v:.8}"),
        0 => (fraction, -1074),
        _ => (fraction | 1 << 52, biased - 1075),
    };
    // v × 10^8 = m × 10^8 × 2^e, and m × 10^8 < 2^80.
    let scaled = u128::from(m) * SCALE;
    let units = match e {
        0.. if e <= 47 => scaled << e,
        0.. => return format!("{v:.8}"),
        _ if e <= -128 => 0,
        _ => {
            let shift = e.unsigned_abs();
            let (q, r, half) = (
                scaled >> shift,
                scaled & ((1 << shift) - 1),
                1u128 << (shift - 1),
            );
            q + u128::from(r > half || (r == half && q & 1 == 1))
        }
    };
    let mut out = String::with_capacity(24);
    if bits >> 63 == 1 {
        out.push('-');
    }
    out.push_str(itoa::Buffer::new().format(units / SCALE));
    out.push('.');
    let mut buf = itoa::Buffer::new();
    let fraction = buf.format(units % SCALE);
    out.extend(std::iter::repeat_n('0', 8 - fraction.len()));
    out.push_str(fraction);
    out
}

#[cfg(test)]
mod tests {
    use super::{header_safe, mask_keys, visible_ascii};

    #[test]
    fn visible_ascii_agrees_with_a_byte_by_byte_check_for_every_byte_at_every_place() {
        let slow = |b: &[u8]| b.iter().all(|c| c.is_ascii_graphic() || *c == b' ');
        for len in 0..=24 {
            let base: Vec<u8> = (0..len).map(|i| b' ' + (i * 7 % 95) as u8).collect();
            assert!(visible_ascii(&base), "{base:?}");
            for at in 0..len {
                for byte in 0..=255u8 {
                    let mut v = base.clone();
                    v[at] = byte;
                    assert_eq!(
                        visible_ascii(&v),
                        slow(&v),
                        "byte {byte:#x} at {at} of {len}"
                    );
                    // Two bad bytes, the second after the first: borrows and carries between them.
                    if at + 1 < len {
                        v[at + 1] = byte.wrapping_add(1);
                        assert_eq!(visible_ascii(&v), slow(&v), "{v:?}");
                    }
                }
            }
        }
        assert_eq!(header_safe("caf\u{e9} ok"), "caf? ok");
        assert_eq!(header_safe("a\tb~ "), "a?b~ ");
    }

    #[test]
    fn masks_keys_and_fragments_keeps_words() {
        let openai_401 = "Incorrect API key provided: sk-proj-abcd****************************wxyz. You can find your API key at https://platform.openai.com/account/api-keys.";
        let m = mask_keys(openai_401);
        assert!(!m.contains("abcd") && !m.contains("wxyz"), "{m}");
        assert!(
            m.starts_with("Incorrect API key provided: [masked]. You can find"),
            "{m}"
        );
        assert_eq!(
            mask_keys("token gsk_0123456789abcdef0123 and A1B2C3D4E5F6G7H8I9J0K1"),
            "token [masked] and [masked]"
        );
        assert_eq!(
            mask_keys("max_tokens is too large: 100000"),
            "max_tokens is too large: 100000"
        );
    }
    /// A value built for its header is made safe as a borrowed one is: every byte that is not
    /// visible ASCII or a space becomes `?`, one per character.
    #[test]
    fn built_and_borrowed_header_values_are_made_safe_alike() {
        for v in [
            "plain value; 1",
            "tab\there",
            "caf\u{e9} \u{1f600}",
            "nl\r\n",
            "",
            "\u{7f}~ ",
        ] {
            let want: String = v
                .chars()
                .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
                .collect();
            assert_eq!(super::header_safe(v), want);
            assert_eq!(super::header_safe_owned(v.to_string()), want);
        }
    }

    /// The cost header's digits against `format!("{:.8}")`, the formatter it replaces.
    mod eight_decimals {
        use super::super::eight_decimals;
        use proptest::prelude::*;

        fn same(v: f64) {
            assert_eq!(
                eight_decimals(v),
                format!("{v:.8}"),
                "{v:e} ({:#x})",
                v.to_bits()
            );
        }

        #[test]
        fn edges_and_ties() {
            for v in [
                0.0,
                -0.0,
                1.0,
                -1.0,
                0.5,
                1e-8,
                5e-9,
                4.9999999e-9,
                1.5e-8,
                2.5e-8,
                0.123456785,
                1.0 / 512.0,
                3.0 / 512.0,
                5.0 / 1024.0,
                1e-300,
                -1e-300,
                f64::MIN_POSITIVE,
                5e-324,
                1e15,
                123_456_789.123_456_79,
                2f64.powi(99),
                2f64.powi(100),
                f64::MAX,
                f64::MIN,
                f64::NAN,
                f64::INFINITY,
                f64::NEG_INFINITY,
            ] {
                same(v);
            }
            // Every exact tie of the eighth decimal below 2 (odd multiples of 2^-9 .. 2^-13 are
            // the dyadic values whose ninth-place remainder is exactly half).
            for shift in 9..=13 {
                for k in (1..(2 << shift)).step_by(2) {
                    same(f64::from(k) / f64::from(1u32 << shift));
                }
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(20_000))]
            #[test]
            fn any_double(bits in any::<u64>()) {
                same(f64::from_bits(bits));
            }

            #[test]
            fn costs(v in 0.0f64..10.0) {
                same(v);
            }

            #[test]
            fn near_ties(k in 0u64..2_000_000_000, d in -3i64..=3) {
                same(f64::from_bits((k as f64 / 1e8 + 5e-9).to_bits().wrapping_add_signed(d)));
            }
        }
    }
}
