//! Response ids for follow-ups without state at the edge. A response a provider keeps (the
//! Responses API passed through, `previous_response_id`, `GET /v1/responses/{id}`) is named to
//! the client by an id that also names the provider holding it and the tenant that made it,
//! sealed with an HMAC-SHA256 under the deployment's `response_id_key` secret:
//!
//! `resp_mrd1~{provider}~{tenant or -}~{the provider's id}~{24 hex digits of the MAC}`
//!
//! so a client can neither forge one nor move one to another provider or tenant. Answers made
//! from chat have ids `resp_mrd_…`: nothing is stored for them anywhere, and a follow-up by such
//! an id is refused with what to do instead. Pure.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The secret (a Spin variable) that seals response ids.
pub const KEY_VARIABLE: &str = "response_id_key";

const SEALED: &str = "resp_mrd1~";
/// Ids of answers made from chat: nothing is stored for them.
pub const STATELESS: &str = "resp_mrd_";

/// The key that seals response ids (the `response_id_key` secret), if the deployment set one.
pub fn key(secret: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    secret(KEY_VARIABLE).filter(|k| !k.is_empty())
}

/// What a sealed id says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub provider: String,
    /// `None`: made by an anonymous caller.
    pub tenant: Option<String>,
    /// The provider's own id.
    pub id: String,
}

/// Why an id cannot be followed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unsealed {
    /// An answer made from chat: no provider keeps it.
    Stateless,
    /// Not an id this deployment issued, or one that was altered.
    Forged,
}

fn mac(key: &[u8], provider: &str, tenant: &str, id: &str) -> String {
    // A key of any length is accepted by HMAC; `new_from_slice` cannot fail for it.
    let Ok(mut m) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    for part in ["v1", provider, tenant, id] {
        m.update(&(part.len() as u64).to_be_bytes());
        m.update(part.as_bytes());
    }
    let bytes = m.finalize().into_bytes();
    crate::trace::to_hex(&bytes[..12])
}

/// The id the client gets for `id`, kept by `provider` for `tenant`.
pub fn seal(key: &[u8], provider: &str, tenant: Option<&str>, id: &str) -> String {
    let tenant = tenant.unwrap_or("-");
    format!(
        "{SEALED}{provider}~{tenant}~{id}~{}",
        mac(key, provider, tenant, id)
    )
}

/// Reads an id the client sent back.
pub fn open(key: &[u8], given: &str) -> Result<Sealed, Unsealed> {
    if given.starts_with(STATELESS) {
        return Err(Unsealed::Stateless);
    }
    let rest = given.strip_prefix(SEALED).ok_or(Unsealed::Forged)?;
    let mut parts = rest.split('~');
    let (Some(provider), Some(tenant), Some(id), Some(tag), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(Unsealed::Forged);
    };
    let want = mac(key, provider, tenant, id);
    use subtle::ConstantTimeEq;
    if want.is_empty() || !bool::from(want.as_bytes().ct_eq(tag.as_bytes())) {
        return Err(Unsealed::Forged);
    }
    Ok(Sealed {
        provider: provider.to_string(),
        tenant: (tenant != "-").then(|| tenant.to_string()),
        id: id.to_string(),
    })
}

/// Puts the sealed id in place of the provider's in a Responses object or event (the
/// response's own `"id"`, wherever it appears), by exact replacement of the quoted id.
pub fn replace_id(bytes: &[u8], original: &str, sealed: &str) -> Vec<u8> {
    let from = format!("\"{original}\"");
    let to = format!("\"{sealed}\"");
    let from = from.as_bytes();
    let mut out = Vec::with_capacity(bytes.len() + 64);
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(from) {
            out.extend_from_slice(to.as_bytes());
            i += from.len();
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// The response id an event or object carries (`{"id": …}` of a response object, or of the
/// `response` inside an event).
pub fn response_id(v: &serde_json::Value) -> Option<&str> {
    if v["object"] == "response" {
        return v["id"].as_str();
    }
    v["response"]["id"].as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_id_opens_to_what_was_sealed_and_nothing_else_does() {
        let k = b"0123456789abcdef0123456789abcdef";
        let s = seal(k, "openai-eu", Some("acme"), "resp_67ccd2bed1ec");
        assert!(s.starts_with("resp_mrd1~openai-eu~acme~resp_67ccd2bed1ec~"));
        assert_eq!(
            open(k, &s),
            Ok(Sealed {
                provider: "openai-eu".into(),
                tenant: Some("acme".into()),
                id: "resp_67ccd2bed1ec".into()
            })
        );
        let anon = seal(k, "p", None, "resp_1");
        assert_eq!(open(k, &anon).map(|s| s.tenant), Ok(None));
        // Another provider, tenant or id under the same tag; another key; a truncated tag.
        for forged in [
            s.replace("openai-eu", "openai-us"),
            s.replace("~acme~", "~other~"),
            s.replace("resp_67ccd2bed1ec", "resp_67ccd2bed1ed"),
            s[..s.len() - 1].to_string(),
            "resp_abc".to_string(),
            format!("{s}~x"),
        ] {
            assert_eq!(open(k, &forged), Err(Unsealed::Forged), "{forged}");
        }
        assert_eq!(open(b"another key", &s), Err(Unsealed::Forged));
        assert_eq!(open(k, "resp_mrd_abc"), Err(Unsealed::Stateless));
    }

    #[test]
    fn the_id_is_replaced_exactly_where_it_is_quoted() {
        let b = br#"{"id":"resp_1","output":[{"id":"msg_1","text":"resp_1"}],"x":"resp_12"}"#;
        let out = replace_id(b, "resp_1", "SEALED");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"id":"SEALED","output":[{"id":"msg_1","text":"SEALED"}],"x":"resp_12"}"#
        );
    }
}

/// Seals the response id in a passed-through Responses stream: the id is learnt from the first
/// event that carries the response object (`response.created`) and replaced in every event
/// after it. Whole lines in, whole lines out.
#[derive(Debug)]
pub struct IdSealer {
    key: String,
    provider: String,
    tenant: Option<String>,
    ids: Option<(String, String)>,
}

impl IdSealer {
    pub fn new(key: String, provider: String, tenant: Option<String>) -> IdSealer {
        IdSealer {
            key,
            provider,
            tenant,
            ids: None,
        }
    }

    pub fn feed(&mut self, bytes: Vec<u8>) -> Vec<u8> {
        if self.ids.is_none() {
            for data in crate::sse::lines(&bytes).filter_map(crate::sse::data_of) {
                let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
                    continue;
                };
                if let Some(id) = response_id(&v) {
                    let sealed = seal(
                        self.key.as_bytes(),
                        &self.provider,
                        self.tenant.as_deref(),
                        id,
                    );
                    self.ids = Some((id.to_string(), sealed));
                    break;
                }
            }
        }
        match &self.ids {
            Some((original, sealed)) => replace_id(&bytes, original, sealed),
            None => bytes,
        }
    }
}
