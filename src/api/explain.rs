//! The dry run: what Meridian would do with a request, without forwarding it.

use std::fmt::Write as _;

use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use crate::auth;
use crate::decide::{decide, Decision};
use crate::error::ApiError;
use crate::facts::{self, Endpoint};
use crate::location::Location;
use crate::policy::Policy;

/// The header that carries the admin key for `POST /v1/route/explain`.
pub use crate::policy::ADMIN_KEY_HEADER;

/// `POST /v1/route/explain` is for the operator: the admin key (the Spin variable `admin_key`)
/// in [`ADMIN_KEY_HEADER`], checked before anything of the body is read.
pub fn admit(headers: &[(String, String)], admin_key: Option<&str>) -> Result<(), ApiError> {
    let Some(admin_key) = admin_key.filter(|k| !k.is_empty()) else {
        return Err(ApiError::new(
            403,
            "explain_disabled",
            "The explain endpoint is disabled: set the Spin variable `admin_key` to enable it.",
        ));
    };
    let given = crate::headers::get(headers, ADMIN_KEY_HEADER).map(str::as_bytes);
    let ok = given.is_some_and(|g| {
        bool::from(crate::policy::hash_key_bytes(g).ct_eq(&crate::policy::hash_key(admin_key)))
    });
    if !ok {
        return Err(ApiError::new(
            401,
            "invalid_admin_key",
            format!("Send the admin key in `{ADMIN_KEY_HEADER}`."),
        ));
    }
    Ok(())
}

/// The decision for a request (headers as received, the JSON body), as JSON: the facts read, the
/// decision and a text account. Shared by the endpoint and `meridian explain`. `location` is
/// where the client is: read from the headers (`location::locate`) or given by the tool;
/// `measured_ms`, the latencies this edge measured (the endpoint reads them from the store; the
/// tool has none, so `sort = "latency"` shows the policy's priors there).
pub fn explain_request(
    policy: &Policy,
    request_id: &str,
    edge_region: Option<String>,
    headers: &[(String, String)],
    raw_body: &[u8],
    location: Location,
    measured_ms: Vec<(String, u32)>,
) -> Result<Value, ApiError> {
    let mut body = match serde_json::from_slice::<Value>(raw_body) {
        Ok(Value::Object(m)) => m,
        _ => {
            return Err(ApiError::bad_request(
                "invalid_json",
                "The body must be the JSON request to explain.",
            ))
        }
    };
    let endpoint =
        match body.shift_remove("endpoint") {
            None => Endpoint::Chat,
            Some(Value::String(e)) => match e.as_str() {
                "chat" => Endpoint::Chat,
                "completions" => Endpoint::Completions,
                "embeddings" => Endpoint::Embeddings,
                "messages" => Endpoint::Messages,
                "responses" => Endpoint::Responses,
                _ => return Err(ApiError::bad_request(
                    "invalid_endpoint",
                    "`endpoint` must be \"chat\", \"completions\", \"embeddings\", \"messages\" or \"responses\"",
                )),
            },
            Some(_) => {
                return Err(ApiError::bad_request(
                    "invalid_endpoint",
                    "`endpoint` must be a string",
                ))
            }
        };
    let tenant = auth::authenticate(policy, headers)?;
    let cx = facts::Context {
        location,
        request_id: request_id.to_string(),
        endpoint,
        tenant: tenant.map(|t| t.id.clone()),
        edge_region,
        headers,
        pii: policy.pii.used.then_some(&policy.pii),
        unknown_fields: policy.settings.unknown_fields,
        injection: policy.guards.builtin_used,
        rule_headers: policy.rules_read_headers(),
        prefix_bounds: policy.prefix_bounds(),
    };
    let mut facts = facts::from_request(cx, &mut body).map_err(ApiError::from)?;
    // The latencies this edge region has measured, as a request here would use them.
    facts.measured_ms = measured_ms;
    let mut decision = decide(policy, &facts);
    // A pool's replicas in the order this prompt's prefix gives them; explain reads no load.
    let (candidates, chosen) = crate::pool::expand(
        policy,
        std::mem::take(&mut decision.candidates),
        &facts,
        &crate::pool::Summary::new(),
        0,
    );
    decision.candidates = candidates;
    let mut text = explain_text(&decision);
    for c in chosen {
        let _ = writeln!(
            text,
            "pool {}: replicas by {} for this prompt (load not read here: each request reads it): {}",
            c.provider,
            c.pool.balance.name(),
            crate::pool::names(c.pool, &c.choice.order).join(", ")
        );
    }
    Ok(json!({
        "policy": policy.version_label(),
        "facts": facts,
        "decision": decision,
        "text": text,
    }))
}

/// A human-readable account of a decision.
pub fn explain_text(d: &Decision) -> String {
    let mut s = String::new();
    let juris = if d.client_jurisdictions.is_empty() {
        "none".to_string()
    } else {
        d.client_jurisdictions.join(", ")
    };
    let _ = writeln!(
        s,
        "request {} for model `{}` from country {} (jurisdictions: {juris}), tenant {}",
        d.request_id,
        d.model,
        d.client_country,
        d.tenant.as_ref().map_or("(anonymous)", |t| t.as_str())
    );
    if !d.privacy.is_empty() {
        let _ = writeln!(s, "privacy in force: {}", d.privacy.join(", "));
    }
    if let Some(p) = &d.pii {
        let found = if p.found.is_empty() {
            "none found".to_string()
        } else {
            p.found
                .iter()
                .map(|(k, n)| format!("{k} ×{n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let what = match p.action {
            "redacted" => format!(
                "redacted before forwarding ({}){}",
                p.redact_names.join(", "),
                if p.restore {
                    ", restored in the answer"
                } else {
                    ""
                }
            ),
            "routed" => "routed by the rules that match it".to_string(),
            "refused" => "refused".to_string(),
            "detected" => "no rule acts on it".to_string(),
            _ => "nothing to do".to_string(),
        };
        let _ = writeln!(s, "personal data in the prompt: {found}; {what}");
    }
    let rules: Vec<&str> = d.matched_rules.iter().map(|r| r.as_str()).collect();
    let _ = writeln!(
        s,
        "matched rules: {}",
        if rules.is_empty() {
            "(none)".to_string()
        } else {
            rules.join(", ")
        }
    );
    for (i, c) in d.candidates.iter().enumerate() {
        let _ = writeln!(
            s,
            "  {}. {}{} as `{}` (processes data in {}, keeps it in {})",
            i + 1,
            c.provider,
            c.replica
                .map(|(r, _)| format!(" replica {r}"))
                .unwrap_or_default(),
            c.upstream_model,
            c.location,
            c.storage
        );
    }
    for e in &d.excluded {
        for r in &e.reasons {
            let _ = writeln!(s, "  excluded {}: {r}", e.provider);
        }
    }
    for g in &d.guards {
        let u = g.usage;
        let when = if u.before_send {
            "before any provider"
        } else if u.on == crate::policy::GuardOn::Input && !g.guard.is_builtin() {
            "beside the first attempt"
        } else {
            "on the answer"
        };
        let _ = writeln!(
            s,
            "guard {} (rule {}): {} {}, {when}, action {}, fails {}{}",
            g.guard.id,
            g.rule,
            u.on.name(),
            g.guard.kind.name(),
            u.action.name(),
            if u.fail_open { "open" } else { "closed" },
            if g.guard.is_builtin() {
                "; built in, nothing sent"
            } else {
                ""
            }
        );
        for r in &g.excluded {
            let _ = writeln!(s, "  may not be sent the text ({}): {r}", g.guard.location);
        }
    }
    if d.refusal.is_none() {
        let p = &d.plan;
        let mut on: Vec<String> = [
            (p.fallback_on.connect, "connect"),
            (p.fallback_on.timeout, "timeout"),
            (p.fallback_on.malformed, "malformed"),
        ]
        .iter()
        .filter(|(set, _)| *set)
        .map(|(_, w)| w.to_string())
        .collect();
        on.extend(p.fallback_on.statuses.iter().map(u16::to_string));
        let _ = writeln!(
            s,
            "plan: attempt timeout {} ms, first byte {} ms, idle {} ms, deadline {} ms, {} retries (backoff {} ms), {}; fall back on {}",
            p.attempt_timeout_ms,
            p.first_byte_timeout_ms,
            p.idle_timeout_ms,
            p.deadline_ms,
            p.retries,
            p.backoff_ms,
            p.hedge_after_ms
                .map_or_else(|| "no hedging".to_string(), |h| format!("hedge after {h} ms")),
            if on.is_empty() { "nothing".to_string() } else { on.join(", ") }
        );
    }
    if let Some(r) = &d.refusal {
        let _ = writeln!(s, "refused with {} {}: {}", r.status, r.code, r.message);
    }
    s
}
