//! `GET` and `DELETE /v1/responses/{id}`, and `GET /v1/responses/{id}/input_items`: a stored
//! response, fetched from (or deleted at) the provider that keeps it, as the sealed id names
//! it, for the tenant that made it, and only while the policy still allows this caller there.

use super::{json_header, Body, Env, Outcome};
use crate::audit::Record;
use crate::error::ApiError;
use crate::policy::Policy;
use crate::request::Endpoint;
use crate::transport::{Failure, OutboundRequest, Transport, UpMethod};

/// The query parameters OpenAI's retrieve and list-input-items endpoints take, less `stream`
/// (this route answers whole): nothing else reaches the provider.
const QUERY_KEYS: &[&str] = &["after", "before", "include", "include[]", "limit", "order"];

/// How long the provider has to answer (headers and body).
const TIMEOUT_MS: u64 = 30_000;

/// The stored response a path names: its sealed id, the sub-resource (`/input_items` or none)
/// and the query, every parameter of which OpenAI's endpoints take.
fn target(path: &str) -> Result<(&str, &'static str, Option<&str>), ApiError> {
    let (path_only, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    let rest = path_only
        .trim_end_matches('/')
        .strip_prefix("/v1/responses/")
        .unwrap_or("");
    if let Some(q) = query {
        for (k, _) in url::form_urlencoded::parse(q.as_bytes()) {
            if !QUERY_KEYS.contains(&k.as_ref()) {
                return Err(ApiError::bad_request(
                    "unknown_parameter",
                    format!(
                        "unknown query parameter `{}`: Meridian forwards only {}",
                        crate::audit::header_safe(&k),
                        QUERY_KEYS.join(", ")
                    ),
                ));
            }
        }
    }
    match rest.split_once('/') {
        Some((id, "input_items")) => Ok((id, "/input_items", query)),
        Some(_) => Err(super::not_found(path_only)),
        None => Ok((rest, "", query)),
    }
}

/// A stored response's whole body, read within what is left of the deadline and the
/// deployment's response limit.
async fn read_whole<T: Transport>(
    t: &T,
    mut body: T::Body,
    began: u64,
    max_bytes: usize,
    provider: &str,
    record: &mut Record,
) -> Result<Vec<u8>, ApiError> {
    let mut bytes = Vec::new();
    let mut waits = crate::transport::Waits::new(began + TIMEOUT_MS, TIMEOUT_MS);
    loop {
        let Some(wait) = waits.next(|| t.now_ms()) else {
            return Err(upstream_failed(provider, &Failure::Timeout("body"), record));
        };
        match crate::transport::next_within(|| t.now_ms(), &mut body, wait, waits.read_ms()).await {
            None => return Ok(bytes),
            Some(Ok(c)) if bytes.len() + c.len() <= max_bytes => bytes.extend(c),
            Some(Ok(_)) => {
                return Err(upstream_failed(
                    provider,
                    &Failure::Malformed("answer too large".into()),
                    record,
                ))
            }
            Some(Err(f)) => return Err(upstream_failed(provider, &f, record)),
        }
    }
}

pub(super) async fn stored<T: Transport>(
    env: &Env<'_>,
    t: &T,
    policy: &Policy,
    method: &str,
    path: &str,
    caller: &super::Asker<'_>,
    record: &mut Record,
) -> Outcome<crate::wire::WireBody<T::Body>> {
    let (given, sub, query) = target(path)?;
    let tenant = caller.tenant;
    let not_found = || {
        ApiError::new(
            404,
            "response_not_found",
            "No response with that id exists for this caller.",
        )
    };
    let key = crate::responses::key(env.secret).ok_or_else(not_found)?;
    let sealed = match crate::responses::open(key.as_bytes(), given) {
        Ok(s) => s,
        Err(crate::responses::Unsealed::Stateless) => {
            return Err(ApiError::new(
                404,
                "response_not_stored",
                "That response was made by a provider that keeps nothing (Meridian translated it from chat), so it cannot be fetched.",
            ))
        }
        Err(crate::responses::Unsealed::Forged) => return Err(not_found()),
    };
    if sealed.tenant.as_deref() != tenant.map(|t| t.id.as_str()) {
        return Err(not_found());
    }
    let Some(index) = policy
        .providers
        .iter()
        .position(|p| p.id.as_str() == sealed.provider)
    else {
        return Err(not_found());
    };
    let provider = &policy.providers[index];
    if !allowed_there(policy, caller, provider.id.as_str())? {
        return Err(ApiError::new(
            403,
            "response_not_allowed",
            format!(
                "The response is kept by `{}`, where the policy does not allow this caller now.",
                provider.id
            ),
        ));
    }
    record.provider = Some(provider.id.0.to_string());
    record.jurisdiction = Some(provider.location.to_string());
    record.storage = Some(crate::policy::Recipient::stored_in(provider).to_string());
    record.retention_days = provider.retention_days;
    record.zdr = Some(provider.zdr);
    let mut h = vec![
        ("accept".to_string(), "application/json".to_string()),
        ("x-request-id".to_string(), record.request_id.clone()),
    ];
    match crate::wire::provider_key(provider, env.secret) {
        Ok(key) => h.extend(key.as_deref().map(crate::wire::openai::authorization)),
        Err(why) => {
            record.error_detail = Some(why);
            return Err(ApiError::new(
                502,
                "upstream_unavailable",
                format!("The provider `{}` is not configured.", provider.id),
            ));
        }
    }
    let mut url = format!(
        "{}/responses/{}{sub}",
        provider.base_url.as_str().trim_end_matches('/'),
        sealed.id
    );
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    let req = OutboundRequest {
        url,
        headers: h,
        body: Vec::new(),
        wire: crate::wire::Wire::OpenAi,
        idle_timeout_ms: 0,
        all_headers: false,
        read_load: false,
        method: if method == "DELETE" {
            UpMethod::Delete
        } else {
            UpMethod::Get
        },
    };
    let began = t.now_ms();
    let up = t
        .send(req, TIMEOUT_MS)
        .await
        .map_err(|f| upstream_failed(provider.id.as_str(), &f, record))?;
    let bytes = read_whole(
        t,
        up.body,
        began,
        env.max_response_bytes,
        provider.id.as_str(),
        record,
    )
    .await?;
    if !(200..300).contains(&up.status) {
        return Err(super::inference::upstream_error(
            provider.id.as_str(),
            up.status,
            "",
        ));
    }
    let sealed_id = crate::responses::seal(
        key.as_bytes(),
        provider.id.as_str(),
        tenant.map(|t| t.id.as_str()),
        &sealed.id,
    );
    let bytes = crate::responses::replace_id(&bytes, &sealed.id, &sealed_id);
    Ok((up.status, vec![json_header()], Body::Full(bytes)))
}

fn upstream_failed(provider: &str, f: &Failure, record: &mut Record) -> ApiError {
    record.error_detail = f.detail();
    ApiError::new(
        502,
        "upstream_unavailable",
        format!("The provider `{provider}` failed: {}.", f.label()),
    )
}

/// Whether this caller's request for any model the provider serves may go there now.
fn allowed_there(
    policy: &Policy,
    caller: &super::Asker<'_>,
    provider: &str,
) -> Result<bool, ApiError> {
    let Some(p) = policy.provider(provider) else {
        return Ok(false);
    };
    for model in p.models.keys() {
        let d = super::decide_bare(policy, caller, Endpoint::Responses, model)?;
        if d.candidates.iter().any(|c| c.provider.as_str() == provider) {
            return Ok(true);
        }
    }
    Ok(false)
}
