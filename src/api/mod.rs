//! The HTTP API, independent of the host: routing, the simple endpoints, CORS, and the
//! inference flow (in `inference`). The host adapter only moves bytes in and out.

mod explain;
mod inference;
mod stream;

pub use explain::{explain, explain_request, explain_text};
pub use inference::{inference, Env, Reply, Served};
pub use stream::{pump, ChunkSink, StreamEnd};

use serde_json::json;

use crate::audit;
use crate::error::ApiError;
use crate::facts::Endpoint;
use crate::policy::geoip::GeoTable;
use crate::policy::Policy;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Health,
    Models,
    Explain,
    Inference(Endpoint),
    Preflight,
    NotFound,
    MethodNotAllowed(&'static str),
}

/// Maps method and path (query ignored) to a route.
pub fn route(method: &str, path: &str) -> Route {
    let path = path.split('?').next().unwrap_or(path);
    let path = if path.len() > 1 {
        path.trim_end_matches('/')
    } else {
        path
    };
    let (route, allowed) = match path {
        "/healthz" => (Route::Health, "GET"),
        "/v1/models" => (Route::Models, "GET"),
        "/v1/route/explain" => (Route::Explain, "POST"),
        p => match Endpoint::from_path(p) {
            Some(e) => (Route::Inference(e), "POST"),
            None => return Route::NotFound,
        },
    };
    match method {
        "OPTIONS" => Route::Preflight,
        m if m == allowed || (allowed == "GET" && m == "HEAD") => route,
        _ => Route::MethodNotAllowed(allowed),
    }
}

pub fn not_found(path: &str) -> ApiError {
    ApiError::new(
        404,
        "unknown_url",
        format!(
            "Unknown request URL: {}. Meridian serves /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models and /healthz.",
            crate::audit::header_safe(path.split('?').next().unwrap_or(path))
        ),
    )
}

pub fn method_not_allowed(method: &str, allowed: &str) -> ApiError {
    ApiError::new(
        405,
        "method_not_allowed",
        format!("Method {method} is not allowed here; use {allowed}."),
    )
}

/// `GET /v1/models`: every model the policy's catalog serves, in OpenAI's list shape.
/// `GET /v1/models`: the caller must be allowed in (a key, or anonymous access); a tenant sees
/// only the models its `models` globs allow.
pub fn models(policy: &Policy, headers: &[(String, String)]) -> Result<Vec<u8>, ApiError> {
    let tenant = crate::auth::authenticate(policy, headers)?;
    Ok(models_body(policy, tenant))
}

fn models_body(policy: &Policy, tenant: Option<&crate::policy::Tenant>) -> Vec<u8> {
    let data: Vec<_> = policy
        .model_names()
        .into_iter()
        .filter(|m| {
            tenant.is_none_or(|t| t.models.is_empty() || t.models.iter().any(|g| g.matches(m)))
        })
        .map(|m| {
            let providers: Vec<&str> = policy
                .providers
                .iter()
                .filter(|p| p.models.contains_key(m))
                .map(|p| p.id.as_str())
                .collect();
            json!({
                "id": m,
                "object": "model",
                "created": 0,
                "owned_by": "meridian",
                "meridian": { "providers": providers },
            })
        })
        .collect();
    json!({ "object": "list", "data": data })
        .to_string()
        .into_bytes()
}

/// The policy's version as reported on every response and log line; with the IP-to-country
/// table's date when the build has one, since the table decides countries too.
pub fn policy_label(policy: &Policy, geoip: Option<&GeoTable<'_>>) -> String {
    match geoip {
        Some(t) => format!("{} ip-table {}", policy.version_label(), t.date),
        None => policy.version_label(),
    }
}

pub fn health_body(policy: &Policy, geoip: Option<&GeoTable<'_>>) -> Vec<u8> {
    let c = &policy.settings.client;
    json!({
        "status": "ok",
        "policy": policy_label(policy, geoip),
        "providers": policy.providers.len(),
        "rules": policy.rules.len(),
        "client_location": {
            "platform": c.platform.name(),
            "country_header": c.country.as_ref().map(|h| &h.name),
            "address_header": c.address.as_ref().map(|h| &h.name),
            "edge_secret": c.edge_secret.is_some(),
            "ip_table": geoip.map(|t| json!({
                "date": t.date,
                "source": t.source,
                "ipv4_ranges": t.len().0,
                "ipv6_ranges": t.len().1,
            })),
        },
    })
    .to_string()
    .into_bytes()
}

/// Origins allowed to call from a browser: the union of every browser key's origins.
pub fn origin_allowed(policy: &Policy, origin: &str) -> bool {
    policy
        .tenants
        .iter()
        .any(|t| t.origins.iter().any(|o| o == origin))
}

/// CORS headers for a response to a request from `origin`, if that origin may call.
pub fn cors_headers(policy: &Policy, headers: &[(String, String)]) -> Vec<(String, String)> {
    let Some(origin) = headers.iter().find(|(k, _)| k == "origin").map(|(_, v)| v) else {
        return Vec::new();
    };
    if !origin_allowed(policy, origin) {
        return Vec::new();
    }
    vec![
        ("access-control-allow-origin".into(), origin.clone()),
        ("vary".into(), "Origin".into()),
        (
            "access-control-expose-headers".into(),
            audit::ALL.join(", "),
        ),
    ]
}

/// Answers a CORS preflight: 204 with the allowed methods and headers, or 403.
pub fn preflight(
    policy: &Policy,
    headers: &[(String, String)],
) -> Result<Vec<(String, String)>, ApiError> {
    let mut out = cors_headers(policy, headers);
    if out.is_empty() {
        return Err(ApiError::new(
            403,
            "origin_not_allowed",
            "This origin may not call Meridian from a browser.",
        ));
    }
    out.push((
        "access-control-allow-methods".into(),
        "GET, POST, OPTIONS".into(),
    ));
    out.push((
        "access-control-allow-headers".into(),
        "authorization, content-type, x-api-key, x-request-id, x-meridian-privacy".into(),
    ));
    out.push(("access-control-max-age".into(), "600".into()));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            route("POST", "/v1/chat/completions"),
            Route::Inference(Endpoint::Chat)
        );
        assert_eq!(
            route("POST", "/v1/embeddings?x=1"),
            Route::Inference(Endpoint::Embeddings)
        );
        assert_eq!(
            route("GET", "/v1/chat/completions"),
            Route::MethodNotAllowed("POST")
        );
        assert_eq!(route("GET", "/v1/models/"), Route::Models);
        assert_eq!(route("POST", "/v1/models"), Route::MethodNotAllowed("GET"));
        assert_eq!(route("GET", "/nope"), Route::NotFound);
        assert_eq!(route("OPTIONS", "/v1/chat/completions"), Route::Preflight);
        assert_eq!(route("GET", "/healthz"), Route::Health);
    }
}
