//! Endpoints and routes, in one home: the inference endpoints Meridian forwards (their paths and
//! names) and the map from a method and path to what serves it.

use crate::audit;
use crate::error::ApiError;

pub use crate::request::Endpoint;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Health,
    /// `GET /.well-known/jwks.json`: the keys receipts are signed with.
    Keys,
    Models,
    Explain,
    Inference(Endpoint),
    /// `GET`/`DELETE /v1/responses/{id}`, `GET /v1/responses/{id}/input_items`.
    StoredResponse,
    /// Anthropic's token counting, which Meridian refuses clearly.
    CountTokens,
    Preflight,
    NotFound,
    MethodNotAllowed(&'static str),
}

/// Maps method and path (query ignored) to a route. `OPTIONS` is a CORS preflight on any path.
pub fn route(method: &str, path: &str) -> Route {
    if method == "OPTIONS" {
        return Route::Preflight;
    }
    let path = path.split('?').next().unwrap_or(path);
    let path = if path.len() > 1 {
        path.trim_end_matches('/')
    } else {
        path
    };
    if let Some(rest) = path.strip_prefix("/v1/responses/") {
        let items = rest.ends_with("/input_items");
        return match method {
            "GET" | "HEAD" => Route::StoredResponse,
            "DELETE" if !items => Route::StoredResponse,
            _ if items => Route::MethodNotAllowed("GET"),
            _ => Route::MethodNotAllowed("GET, DELETE"),
        };
    }
    let (route, allowed) = match path {
        "/healthz" => (Route::Health, "GET"),
        "/.well-known/jwks.json" => (Route::Keys, "GET"),
        "/v1/models" => (Route::Models, "GET"),
        "/v1/route/explain" => (Route::Explain, "POST"),
        "/v1/messages/count_tokens" => (Route::CountTokens, "POST"),
        p => match Endpoint::from_path(p) {
            Some(e) => (Route::Inference(e), "POST"),
            None => return Route::NotFound,
        },
    };
    match method {
        m if m == allowed || (allowed == "GET" && m == "HEAD") => route,
        _ => Route::MethodNotAllowed(allowed),
    }
}

pub fn not_found(path: &str) -> ApiError {
    ApiError::new(
        404,
        "unknown_url",
        format!(
            "Unknown request URL: {}. Meridian serves /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/messages, /v1/responses, /v1/models, /v1/route/explain and /healthz.",
            crate::audit::header_safe(path.split('?').next().unwrap_or(path))
        ),
    )
}

pub fn method_not_allowed(method: &str, allowed: &'static str) -> ApiError {
    let mut e = ApiError::new(
        405,
        "method_not_allowed",
        format!(
            "Method {} is not allowed here; use {allowed}.",
            audit::header_safe(method)
        ),
    );
    e.allow = Some(allowed);
    e
}
