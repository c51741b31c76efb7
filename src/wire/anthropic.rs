//! Anthropic's Messages API: `{base_url}/messages`, the operator's key in `x-api-key`, an
//! `anthropic-version`. An Anthropic client's request passes as it came (checked against
//! `wire::fields`, its model rewritten, its version and its allowed betas kept); an OpenAI
//! client's chat request is translated. Errors for Anthropic clients are written in Anthropic's
//! shape here too.

use serde_json::{json, Value};

use super::translate::messages_from_chat;
use super::{Outgoing, Wire};
use crate::policy::{CapSet, Capability as C};
use crate::request::Endpoint;
use crate::transport::{Failure, OutboundRequest};

/// The `anthropic-version` header sent when neither the client nor the provider names one.
pub const VERSION: &str = "2023-06-01";
/// `max_tokens` for translated requests that give none (the Messages API requires it).
pub const MAX_TOKENS: u32 = 4096;

/// The capabilities this wire has fields for, per client protocol.
pub fn carries(endpoint: Endpoint) -> CapSet {
    match endpoint {
        Endpoint::Messages => CapSet::of(&[
            C::Mcp,
            C::CodeExecution,
            C::WebSearch,
            C::WebFetch,
            C::Files,
            C::RemoteMedia,
            C::PricedOptions,
        ]),
        // Translated from chat: image URLs have a form on both sides; nothing else does.
        Endpoint::Chat | Endpoint::Responses => CapSet::of(&[C::RemoteMedia]),
        Endpoint::Completions | Endpoint::Embeddings => CapSet::EMPTY,
    }
}

pub(super) fn request(o: &Outgoing<'_>) -> Result<OutboundRequest, Failure> {
    let mut h = o.common_headers();
    if let Some(key) = &o.key {
        h.push(("x-api-key".into(), key.clone()));
    }
    let url = [o.base(), "/messages"].concat();
    if o.endpoint == Endpoint::Messages {
        // Anthropic to Anthropic: the client's request as it came, its model rewritten and the
        // operator's key injected; the client's API version and betas kept (`decide` allowed
        // every beta for this provider).
        let version = o
            .client_header("anthropic-version")
            .or(o.provider.api_version.as_deref())
            .unwrap_or(VERSION);
        h.push(("anthropic-version".into(), version.to_string()));
        if let Some(beta) = o.client_header("anthropic-beta") {
            h.push(("anthropic-beta".into(), beta.to_string()));
        }
        let model = Value::String(o.upstream_model.to_string());
        let bytes = super::body_with(o.body, &[("model", &model)])?;
        // A stream is checked as Anthropic's events and passed through, unless redacted values
        // must be put back into it (the restorer reads the OpenAI form): then it is read on the
        // OpenAI wire inside Meridian and written back as Anthropic events.
        let wire = match (o.stream, o.native_streams) {
            (true, true) => Wire::AnthropicNative,
            (true, false) => Wire::Anthropic {
                stream: true,
                include_usage: true,
            },
            (false, _) => Wire::OpenAi,
        };
        return Ok(o.finish(url, h, bytes, wire));
    }
    // A Responses request goes through chat's form on its way to Messages.
    let chat;
    let body = match o.endpoint {
        Endpoint::Chat => o.body,
        Endpoint::Responses => {
            chat = match super::translate::chat_from_responses::request(o.body, o.upstream_model)
                .map_err(Failure::Untranslatable)?
            {
                Value::Object(m) => m,
                _ => return Err(Failure::Untranslatable("the request".into())),
            };
            &chat
        }
        _ => {
            return Err(Failure::Untranslatable(format!(
                "`{}` (Anthropic serves chat only)",
                o.endpoint.path()
            )))
        }
    };
    let version = o.provider.api_version.as_deref().unwrap_or(VERSION);
    h.push(("anthropic-version".into(), version.to_string()));
    let translated = messages_from_chat::request(
        body,
        o.upstream_model,
        o.provider.max_tokens.unwrap_or(MAX_TOKENS),
    )
    .map_err(Failure::Untranslatable)?;
    let bytes = crate::json::to_vec(&translated).map_err(|e| Failure::Config(e.to_string()))?;
    Ok(o.finish(
        url,
        h,
        bytes,
        Wire::Anthropic {
            stream: o.stream,
            include_usage: o.include_usage || o.endpoint == Endpoint::Responses,
        },
    ))
}

/// Anthropic's `error.type` for a status.
pub fn error_type(status: u16) -> &'static str {
    match status {
        400 | 409 | 415 | 422 | 451 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 | 405 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    }
}

/// `{"type":"error","error":{"type":…,"message":…}}`, with Meridian's details kept aside.
pub fn error_body(status: u16, message: &str, details: Option<&Value>) -> Vec<u8> {
    let mut e = json!({"type": "error", "error": {"type": error_type(status), "message": message}});
    if let Some(d) = details {
        e["error"]["meridian"] = d.clone();
    }
    e.to_string().into_bytes()
}
