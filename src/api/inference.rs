//! The inference flow: authenticate → read facts → decide → forward → answer with audit headers.

use serde_json::{json, Map, Value};

use crate::audit::{self, header_safe, AttemptLog};
use crate::auth;
use crate::decide::{decide, Decision};
use crate::error::ApiError;
use crate::facts::{self, Endpoint};
use crate::forward::{self, Attempt, Failure, Limits, OutboundRequest, Outcome, Transport};
use crate::location::{self, Location};
use crate::policy::geoip::GeoTable;
use crate::policy::Policy;
use crate::sse::Usage;

/// An identifier-like value from an upstream error (`type`, `code`, `param`), safe to repeat.
fn ident(v: &Value) -> Option<&str> {
    v.as_str().filter(|s| {
        !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
    })
}

/// Meridian's own error for an upstream error answer: the provider, its status and what kind of
/// error it reported, never the provider's text.
fn upstream_error(provider: &str, status: u16, body: &[u8]) -> ApiError {
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let err = &parsed["error"];
    let mut kind: Vec<String> = Vec::new();
    for field in ["type", "code", "param"] {
        if let Some(v) = ident(&err[field]) {
            kind.push(format!("{field} `{v}`"));
        }
    }
    let kind = if kind.is_empty() {
        String::new()
    } else {
        format!(", {}", kind.join(", "))
    };
    let (out_status, code, what) = match status {
        401 | 403 | 407 => (
            502,
            "upstream_auth_failed",
            "refused Meridian's credentials for it; the operator must check the provider's key",
        ),
        400 | 404 | 409 | 413 | 415 | 422 => {
            (status, "upstream_rejected_request", "rejected the request")
        }
        429 => (
            429,
            "upstream_rate_limited",
            "is rate limiting this deployment",
        ),
        _ => (502, "upstream_error", "answered with an error"),
    };
    ApiError::new(
        out_status,
        code,
        format!(
            "The provider `{provider}` {what} (HTTP {status}{kind}). Its own message is in Meridian's log under this request id."
        ),
    )
}

/// What the host supplies for one request.
pub struct Env<'a> {
    pub policy: &'a Policy,
    pub request_id: String,
    pub edge_region: Option<String>,
    /// Reads a secret (a Spin variable) by name; `None` or empty when it is not set.
    pub secret: &'a dyn Fn(&str) -> Option<String>,
    pub max_response_bytes: usize,
    /// The IP-to-country table built into the component, if any.
    pub geoip: Option<GeoTable<'a>>,
}

pub enum Reply<B> {
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Headers and the first chunk are ready; pass the rest of `body` through with `api::pump`.
    Stream {
        status: u16,
        headers: Vec<(String, String)>,
        first: Vec<u8>,
        body: B,
        provider: String,
        idle_timeout_ms: u64,
    },
}

/// What happened, for the log line (never prompt text, never keys).
#[derive(Debug, Default, Clone)]
pub struct Served {
    pub tenant: Option<String>,
    pub model: Option<String>,
    pub location: Option<Location>,
    pub provider: Option<String>,
    pub upstream_model: Option<String>,
    pub rules: Vec<String>,
    pub candidates: Vec<String>,
    pub excluded: Vec<String>,
    pub attempts: Vec<AttemptLog>,
    pub error_code: Option<&'static str>,
    pub usage: Option<Usage>,
    pub cost_usd: Option<f64>,
    /// Prices of the serving model, to cost a stream's usage when it ends.
    pub prices: (Option<f64>, Option<f64>),
    /// An upstream error body for the log (keys masked); the client got a summary.
    pub upstream_error: Option<String>,
}

impl Served {
    /// Records the candidate that answered.
    fn record(&mut self, c: &crate::decide::Candidate) {
        self.provider = Some(c.provider.0.clone());
        self.upstream_model = Some(c.upstream_model.to_string());
        self.prices = (c.input_price, c.output_price);
    }
}

/// The upstream's passthrough headers plus the audit headers of the candidate that answered.
fn served_headers(
    env: &Env<'_>,
    up: &[(String, String)],
    who: Caller<'_>,
    decision: &crate::decide::Decision,
    c: &crate::decide::Candidate,
    attempts: &[crate::forward::Attempt],
) -> Vec<(String, String)> {
    let mut h = passthrough_headers(up, env.policy.settings.expose_ratelimit_headers);
    h.extend(audit_headers(
        env.policy,
        env.geoip.as_ref(),
        &env.request_id,
        who,
        Some(decision),
        Some(c),
        attempts,
    ));
    h
}

/// Who called and from where, once known: for the audit headers.
#[derive(Clone, Copy, Default)]
struct Caller<'a> {
    /// `Some(None)`: authenticated as anonymous.
    tenant: Option<Option<&'a str>>,
    location: Option<&'a Location>,
}

fn json_header() -> (String, String) {
    ("content-type".into(), "application/json".into())
}

/// Headers from the upstream response that reach the client: an allowlist. `content-type` and
/// `retry-after` always; the provider's `x-ratelimit-*` only when the policy says so (they
/// describe the operator's account, not the caller's). Everything else (cookies, the provider's
/// request ids and organisation names, framing) stays behind.
fn passthrough_headers(up: &[(String, String)], ratelimit: bool) -> Vec<(String, String)> {
    up.iter()
        .filter(|(k, _)| {
            k == "content-type"
                || k == "retry-after"
                || (ratelimit && k.starts_with("x-ratelimit-"))
        })
        .cloned()
        .collect()
}

fn audit_headers(
    policy: &Policy,
    geoip: Option<&GeoTable<'_>>,
    request_id: &str,
    who: Caller<'_>,
    decision: Option<&Decision>,
    served: Option<&crate::decide::Candidate>,
    attempts: &[Attempt],
) -> Vec<(String, String)> {
    let mut h = vec![
        (audit::REQUEST_ID.into(), header_safe(request_id)),
        (
            audit::POLICY.into(),
            header_safe(&super::policy_label(policy, geoip)),
        ),
    ];
    if let Some(t) = who.tenant {
        h.push((audit::TENANT.into(), header_safe(t.unwrap_or("anonymous"))));
    }
    if let Some(l) = who.location {
        h.push((
            audit::CLIENT_COUNTRY.into(),
            header_safe(&format!("{}; {}", l.country, l.source)),
        ));
    }
    if let Some(d) = decision {
        let rules: Vec<&str> = d.matched_rules.iter().map(|r| r.as_str()).collect();
        h.push((audit::RULES.into(), header_safe(&rules.join(","))));
    }
    if let Some(c) = served {
        h.push((audit::PROVIDER.into(), header_safe(c.provider.as_str())));
        h.push((audit::UPSTREAM_MODEL.into(), header_safe(c.upstream_model)));
        h.push((audit::JURISDICTION.into(), header_safe(c.location)));
    }
    h.push((audit::ATTEMPTS.into(), attempts.len().to_string()));
    let failures: Vec<String> = attempts
        .iter()
        .filter_map(|a| a.failure.as_ref().map(|f| format!("{}={f}", a.provider)))
        .collect();
    if !failures.is_empty() {
        h.push((audit::FAILURES.into(), header_safe(&failures.join(", "))));
    }
    if attempts.iter().any(|a| a.hedge) {
        h.push((audit::HEDGED.into(), "true".into()));
    }
    h
}

fn error_reply<B>(
    env: &Env<'_>,
    who: Caller<'_>,
    err: &ApiError,
    decision: Option<&Decision>,
    attempts: &[Attempt],
) -> Reply<B> {
    let mut headers = audit_headers(
        env.policy,
        env.geoip.as_ref(),
        &env.request_id,
        who,
        decision,
        None,
        attempts,
    );
    headers.push(json_header());
    Reply::Full {
        status: err.status,
        headers,
        body: err.body(),
    }
}

/// Applies a browser tenant's `max_tokens` cap: absent → the cap; above it → refused.
fn cap_max_tokens(body: &mut Map<String, Value>, cap: u64) -> Result<(), ApiError> {
    let mut seen = false;
    for field in ["max_tokens", "max_completion_tokens"] {
        if let Some(v) = body.get(field) {
            seen = true;
            match v.as_u64() {
                Some(n) if n <= cap => {}
                _ => {
                    return Err(ApiError::bad_request(
                        "max_tokens_above_limit",
                        format!("`{field}` must be at most {cap} for this key"),
                    )
                    .with_param(Some("max_tokens")))
                }
            }
        }
    }
    if !seen {
        body.insert("max_tokens".into(), Value::from(cap));
    }
    Ok(())
}

fn attempts_json(attempts: &[Attempt]) -> Value {
    Value::Array(
        attempts
            .iter()
            .map(|a| json!({ "provider": a.provider, "error": a.failure, "ms": a.ms, "hedge": a.hedge }))
            .collect(),
    )
}

/// Serves one inference request.
pub async fn inference<T: Transport>(
    env: &Env<'_>,
    t: &T,
    endpoint: Endpoint,
    headers: &[(String, String)],
    raw_body: &[u8],
) -> (Reply<T::Body>, Served) {
    let mut served = Served::default();
    let policy = env.policy;

    let tenant = match auth::authenticate(policy, headers) {
        Ok(t) => t,
        Err(e) => {
            served.error_code = Some(e.code);
            return (error_reply(env, Caller::default(), &e, None, &[]), served);
        }
    };
    served.tenant = tenant.map(|t| t.id.0.clone());
    let edge_secret = policy
        .settings
        .client
        .edge_secret
        .as_ref()
        .and_then(|e| (env.secret)(&e.secret));
    let location = location::locate(
        &policy.settings.client,
        headers,
        env.geoip.as_ref(),
        edge_secret.as_deref(),
    );
    served.location = Some(location.clone());
    let who = Caller {
        tenant: Some(tenant.map(|t| t.id.as_str())),
        location: Some(&location),
    };

    let mut body = match serde_json::from_slice::<Value>(raw_body) {
        Ok(Value::Object(m)) => m,
        Ok(_) => {
            let e =
                ApiError::bad_request("invalid_json", "The request body must be a JSON object.");
            served.error_code = Some(e.code);
            return (error_reply(env, who, &e, None, &[]), served);
        }
        Err(err) => {
            let e = ApiError::bad_request(
                "invalid_json",
                format!(
                    "We could not parse the JSON body of your request: {err}. The OpenAI API expects a JSON payload."
                ),
            );
            served.error_code = Some(e.code);
            return (error_reply(env, who, &e, None, &[]), served);
        }
    };
    if let Some(cap) = tenant.and_then(|t| t.max_tokens) {
        if endpoint != Endpoint::Embeddings {
            if let Err(e) = cap_max_tokens(&mut body, cap) {
                served.error_code = Some(e.code);
                return (error_reply(env, who, &e, None, &[]), served);
            }
        }
    }

    let cx = facts::Context {
        location: location.clone(),
        request_id: env.request_id.clone(),
        endpoint,
        tenant: tenant.map(|t| t.id.clone()),
        edge_region: env.edge_region.clone(),
        headers,
    };
    let facts = match facts::from_request(cx, &mut body) {
        Ok(f) => f,
        Err(fe) => {
            let e = ApiError::bad_request(fe.code, fe.message).with_param(fe.param);
            served.error_code = Some(e.code);
            return (error_reply(env, who, &e, None, &[]), served);
        }
    };
    served.model = Some(facts.model.clone());

    let decision = decide(policy, &facts);
    served.rules = decision.matched_rules.iter().map(|r| r.0.clone()).collect();
    served.candidates = decision
        .candidates
        .iter()
        .map(|c| c.provider.0.clone())
        .collect();
    served.excluded = decision
        .excluded
        .iter()
        .map(|e| e.provider.0.clone())
        .collect();
    if let Some(r) = &decision.refusal {
        let e = ApiError::new(r.status, r.code, r.message.clone()).with_details(json!({
            "request_id": env.request_id,
            "client_country": decision.client_country,
            "client_country_source": location.source,
            "matched_rules": decision.matched_rules,
            "excluded": decision.excluded,
        }));
        served.error_code = Some(r.code);
        return (error_reply(env, who, &e, Some(&decision), &[]), served);
    }

    let accept = headers
        .iter()
        .find(|(k, _)| k == "accept")
        .map_or_else(|| "application/json".to_string(), |(_, v)| v.clone());
    let build = |c: &crate::decide::Candidate| -> Result<OutboundRequest, Failure> {
        let p = &policy.providers[c.index];
        let mut h = vec![
            ("content-type".to_string(), "application/json".to_string()),
            ("accept".to_string(), accept.clone()),
            ("x-request-id".to_string(), env.request_id.clone()),
        ];
        if let Some(name) = &p.key_secret {
            match (env.secret)(name).filter(|k| !k.is_empty()) {
                Some(key) => h.push(("authorization".into(), format!("Bearer {key}"))),
                None => {
                    return Err(Failure::Config(format!(
                        "its key is not set: give the Spin variable `{name}` a value"
                    )))
                }
            }
        }
        let mut b = body.clone();
        b.insert("model".into(), Value::String(c.upstream_model.to_string()));
        let bytes = serde_json::to_vec(&b).map_err(|e| Failure::Config(e.to_string()))?;
        // A known length rather than chunked encoding: some engines' servers read only
        // content-length bodies.
        h.push(("content-length".into(), bytes.len().to_string()));
        let base = p.base_url.as_str().trim_end_matches('/');
        Ok(OutboundRequest {
            url: format!("{base}/{}", endpoint.upstream_suffix()),
            headers: h,
            body: bytes,
        })
    };

    let fwd = forward::forward(
        t,
        &decision,
        build,
        facts.stream,
        Limits {
            max_response_bytes: env.max_response_bytes,
        },
    )
    .await;
    served.attempts = fwd
        .attempts
        .iter()
        .map(|a| AttemptLog {
            provider: a.provider.clone(),
            outcome: a.failure.clone().unwrap_or_else(|| "ok".into()),
            ms: a.ms,
            detail: a.detail.clone(),
        })
        .collect();

    match fwd.outcome {
        Outcome::Exhausted { timed_out } => {
            let (status, code, what) = if timed_out {
                (504, "upstream_timeout", "timed out")
            } else {
                (502, "upstream_unavailable", "failed")
            };
            let list = fwd
                .attempts
                .iter()
                .map(|a| format!("`{}`: {}", a.provider, a.failure.as_deref().unwrap_or("?")))
                .collect::<Vec<_>>()
                .join("; ");
            let e = ApiError::new(
                status,
                code,
                format!(
                    "Every allowed upstream {what} for `{}`. Attempts: {list}",
                    facts.model
                ),
            )
            .with_details(
                json!({ "request_id": env.request_id, "attempts": attempts_json(&fwd.attempts) }),
            );
            served.error_code = Some(code);
            (
                error_reply(env, who, &e, Some(&decision), &fwd.attempts),
                served,
            )
        }
        Outcome::Complete {
            candidate,
            status,
            headers: up,
            body,
            usage,
        } => {
            let c = &decision.candidates[candidate];
            served.record(c);
            served.usage = usage;
            served.cost_usd = usage.and_then(|u| u.cost(c.input_price, c.output_price));
            let mut h = served_headers(env, &up, who, &decision, c, &fwd.attempts);
            if let Some(cost) = served.cost_usd {
                h.push((audit::COST.into(), format!("{cost:.8}")));
            }
            if (200..300).contains(&status) {
                return (
                    Reply::Full {
                        status,
                        headers: h,
                        body,
                    },
                    served,
                );
            }
            // The provider's own error body can carry what the client must not see (a fragment
            // of the operator's key, account names): the client gets a summary, the log the body.
            let e = upstream_error(c.provider.as_str(), status, &body)
                .with_details(json!({ "request_id": env.request_id, "provider": c.provider, "upstream_status": status }));
            served.error_code = Some(e.code);
            let cut = &body[..body.len().min(2048)];
            served.upstream_error = Some(audit::mask_keys(&String::from_utf8_lossy(cut)));
            h.retain(|(k, _)| k != "content-type");
            h.push(json_header());
            (
                Reply::Full {
                    status: e.status,
                    headers: h,
                    body: e.body(),
                },
                served,
            )
        }
        Outcome::Stream {
            candidate,
            status,
            headers: up,
            first,
            body,
        } => {
            let c = &decision.candidates[candidate];
            served.record(c);
            let h = served_headers(env, &up, who, &decision, c, &fwd.attempts);
            (
                Reply::Stream {
                    status,
                    headers: h,
                    first,
                    body,
                    provider: c.provider.0.clone(),
                    idle_timeout_ms: decision.plan.idle_timeout_ms,
                },
                served,
            )
        }
    }
}
