//! Azure OpenAI: the OpenAI wire under `{base_url}/openai/deployments/{deployment}/{endpoint}`
//! with an `api-version` query parameter and the operator's key in `api-key`. The provider's
//! upstream model name is the deployment.

use super::{openai, Outgoing, Wire};
use crate::policy::{CapSet, Capability as C};
use crate::request::Endpoint;
use crate::transport::{Failure, OutboundRequest};

/// The data-plane API version used when a provider names none.
pub const API_VERSION: &str = "2024-10-21";

/// The capabilities this wire has fields for, per client protocol: the OpenAI wire's, with
/// Azure's `data_sources` (on your data) and without OpenAI's web search.
pub fn carries(endpoint: Endpoint) -> CapSet {
    match endpoint {
        Endpoint::Chat => CapSet::of(&[
            C::Store,
            C::DataSources,
            C::Files,
            C::RemoteMedia,
            C::PricedOptions,
        ]),
        other => openai::carries(other, false),
    }
}

pub(super) fn request(o: &Outgoing<'_>) -> Result<OutboundRequest, Failure> {
    let deployment = o.upstream_model;
    if deployment.is_empty()
        || !deployment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(Failure::Config(format!(
            "`{deployment}` is not an Azure deployment name (letters, digits, `-`, `_`, `.`)"
        )));
    }
    let mut h = o.common_headers();
    if let Some(key) = &o.key {
        h.push(("api-key".into(), key.clone()));
    }
    let version = o.provider.api_version.as_deref().unwrap_or(API_VERSION);
    let url = format!(
        "{}/openai/deployments/{deployment}/{}?api-version={version}",
        o.base(),
        openai::path(o.endpoint)
    );
    Ok(o.finish(url, h, openai::body(o)?, Wire::OpenAi))
}
