//! The OpenAI wire, spoken by OpenAI and most providers and self-hosted engines (vLLM, TGI,
//! Ollama, llama.cpp server): `{base_url}/{endpoint}`, `Authorization: Bearer` with the
//! operator's key, the client's body (checked against `wire::fields`) with the model rewritten,
//! or an Anthropic client's Messages request translated to chat.

use serde_json::Value;

use super::translate::chat_from_messages;
use super::{Outgoing, Wire};
use crate::forward::{Failure, OutboundRequest};
use crate::policy::{CapSet, Capability as C};
use crate::routes::Endpoint;

/// The path below a provider's `base_url` (which ends in the API version, e.g. `/v1`); a
/// Messages request becomes a chat request here.
pub fn path(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::Chat | Endpoint::Messages => "chat/completions",
        Endpoint::Completions => "completions",
        Endpoint::Embeddings => "embeddings",
    }
}

/// The capabilities this wire has fields for, per client protocol.
pub fn carries(endpoint: Endpoint) -> CapSet {
    match endpoint {
        Endpoint::Chat => CapSet::of(&[C::Store, C::WebSearch, C::Files, C::RemoteMedia]),
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
        return serde_json::to_vec(&chat).map_err(|e| Failure::Config(e.to_string()));
    }
    let mut b = o.body.clone();
    b.insert("model".into(), Value::String(o.upstream_model.to_string()));
    serde_json::to_vec(&b).map_err(|e| Failure::Config(e.to_string()))
}

pub(super) fn request(o: &Outgoing<'_>) -> Result<OutboundRequest, Failure> {
    let mut h = o.common_headers();
    if let Some(key) = &o.key {
        h.push(("authorization".into(), format!("Bearer {key}")));
    }
    let url = format!("{}/{}", o.base(), path(o.endpoint));
    Ok(o.finish(url, h, body(o)?, Wire::OpenAi))
}
