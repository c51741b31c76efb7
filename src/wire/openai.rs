//! The OpenAI wire, spoken by OpenAI and most providers and self-hosted engines (vLLM, TGI,
//! Ollama, llama.cpp server): `{base_url}/{endpoint}`, `Authorization: Bearer` with the
//! operator's key, the client's body (checked against `wire::fields`) with the model rewritten,
//! or an Anthropic client's Messages request translated to chat.

use serde_json::Value;

use super::translate::{chat_from_messages, chat_from_responses};
use super::{Outgoing, Wire};
use crate::policy::{CapSet, Capability as C};
use crate::request::Endpoint;
use crate::transport::{Failure, OutboundRequest};

/// The path below a provider's `base_url` (which ends in the API version, e.g. `/v1`); a
/// Messages request becomes a chat request here.
pub fn path(endpoint: Endpoint) -> &'static str {
    match endpoint {
        // A Responses request reaching this function is translated to chat (providers that
        // serve Responses themselves are sent to `responses` by `request`).
        Endpoint::Chat | Endpoint::Messages | Endpoint::Responses => "chat/completions",
        Endpoint::Completions => "completions",
        Endpoint::Embeddings => "embeddings",
    }
}

/// The capabilities this wire has fields for, per client protocol; `native_responses`: the
/// provider serves `/v1/responses` itself.
pub fn carries(endpoint: Endpoint, native_responses: bool) -> CapSet {
    match endpoint {
        Endpoint::Responses if native_responses => CapSet::of(&[
            C::Store,
            C::WebSearch,
            C::Files,
            C::CodeExecution,
            C::Mcp,
            C::RemoteMedia,
            C::PricedOptions,
        ]),
        // Translated to chat: image URLs and `service_tier` have a form on both sides; nothing
        // else does.
        Endpoint::Responses => CapSet::of(&[C::RemoteMedia, C::PricedOptions]),
        Endpoint::Chat => CapSet::of(&[
            C::Store,
            C::WebSearch,
            C::Files,
            C::RemoteMedia,
            C::PricedOptions,
        ]),
        // Translated from Messages: image URLs have a form on both sides; nothing else does.
        Endpoint::Messages => CapSet::of(&[C::RemoteMedia]),
        Endpoint::Completions | Endpoint::Embeddings => CapSet::EMPTY,
    }
}

/// The body on the OpenAI wire (also Azure's): the client's own with the provider's model name,
/// or a Messages request translated.
pub(super) fn body(o: &Outgoing<'_>) -> Result<Vec<u8>, Failure> {
    if o.endpoint == Endpoint::Messages {
        let chat = chat_from_messages::request(o.body, o.upstream_model)
            .map_err(Failure::Untranslatable)?;
        return crate::json::to_vec(&chat).map_err(|e| Failure::Config(e.to_string()));
    }
    if o.endpoint == Endpoint::Responses {
        let chat = chat_from_responses::request(o.body, o.upstream_model)
            .map_err(Failure::Untranslatable)?;
        return crate::json::to_vec(&chat).map_err(|e| Failure::Config(e.to_string()));
    }
    let model = Value::String(o.upstream_model.to_string());
    super::body_with(o.body, &[("model", &model)])
}

/// How the OpenAI wire presents the operator's key.
pub fn authorization(key: &str) -> (String, String) {
    ("authorization".into(), ["Bearer ", key].concat())
}

pub(super) fn request(o: &Outgoing<'_>) -> Result<OutboundRequest, Failure> {
    let mut h = o.common_headers();
    if let Some(key) = &o.key {
        h.push(authorization(key));
    }
    if o.endpoint == Endpoint::Responses && native_responses(o) {
        return Ok(o.finish(
            format!("{}/responses", o.base()),
            h,
            responses_body(o)?,
            if o.stream {
                Wire::ResponsesNative
            } else {
                Wire::OpenAi
            },
        ));
    }
    let url = [o.base(), "/", path(o.endpoint)].concat();
    Ok(o.finish(url, h, body(o)?, Wire::OpenAi))
}

/// Whether a Responses request is passed through: the provider serves the API, and nothing
/// redacted has to be put back into its answer (the restorer reads chat's form, so such a
/// request is translated to chat for the same provider).
pub fn native_responses(o: &Outgoing<'_>) -> bool {
    o.provider.responses && o.native_streams
}

/// A Responses request as the provider gets it: the client's, the model rewritten, and
/// `store: false` unless the request asks for retention (the API's default is to store, and
/// `decide` let `store: true` through only where the policy grants it).
fn responses_body(o: &Outgoing<'_>) -> Result<Vec<u8>, Failure> {
    let model = Value::String(o.upstream_model.to_string());
    if o.body.get("store") == Some(&Value::Bool(true)) {
        super::body_with(o.body, &[("model", &model)])
    } else {
        super::body_with(o.body, &[("model", &model), ("store", &Value::Bool(false))])
    }
}
