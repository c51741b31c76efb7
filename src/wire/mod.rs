//! The wires: what clients may send and how each provider is spoken to.
//!
//! - [`fields`]: the client protocols' field tables and the capabilities a request uses.
//! - [`openai`], [`azure`], [`anthropic`]: one module per provider wire, each owning its URL,
//!   authentication, headers, version constants and the capabilities it can carry.
//! - [`translate`]: chat ⇄ Messages shapes, named by what they produce from what.
//! - Here: [`request`] builds one provider's request from an [`Outgoing`], and
//!   [`WireTransport`] translates what comes back, so the attempt loop, the stream guard and the
//!   pump only ever see the OpenAI wire (an Anthropic provider's successful answer becomes
//!   OpenAI JSON, whole, or OpenAI SSE, as it streams). Error answers pass unchanged (they are
//!   summarised, never passed on).

pub mod anthropic;
pub mod azure;
pub mod openai;
pub mod translate;

use serde_json::{Map, Value};

use crate::policy::{Provider, WireKind};
use crate::request::Endpoint;
use crate::transport::{BodyStream, Failure, OutboundRequest, Transport, UpResponse};
use translate::chat_from_messages;

/// The client's body as a provider gets it, with `set`'s fields given: each written where the
/// client's own was, or (the client sent none) after the others in `set`'s order, where
/// `Map::insert` would put it. Written straight from the client's body, never copied: an
/// attempt's body costs one pass over the prompt, not a copy and then a pass.
pub(crate) fn body_with(
    body: &Map<String, Value>,
    set: &[(&str, &Value)],
) -> Result<Vec<u8>, Failure> {
    struct With<'a> {
        body: &'a Map<String, Value>,
        set: &'a [(&'a str, &'a Value)],
    }
    impl serde::Serialize for With<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap;
            let added = self.set.iter().filter(|(k, _)| !self.body.contains_key(*k));
            let mut m = s.serialize_map(Some(self.body.len() + added.clone().count()))?;
            for (k, v) in self.body {
                let given = self.set.iter().find(|(name, _)| name == k);
                m.serialize_entry(k, given.map_or(v, |(_, v)| *v))?;
            }
            for (k, v) in added {
                m.serialize_entry(k, v)?;
            }
            m.end()
        }
    }
    crate::json::to_vec(&With { body, set }).map_err(|e| Failure::Config(e.to_string()))
}

/// Everything a wire needs to build one provider's request.
pub struct Outgoing<'a> {
    pub endpoint: Endpoint,
    /// The client's body, checked against its field table (and redacted where the policy says).
    pub body: &'a Map<String, Value>,
    pub provider: &'a Provider,
    /// The pool's replica this attempt goes to (its position), for a provider with a pool.
    pub replica: Option<usize>,
    pub upstream_model: &'a str,
    /// The operator's key for this provider, from its secret.
    pub key: Option<String>,
    /// The client's request headers (lower-case names); only named ones are ever copied.
    pub client_headers: &'a [(String, String)],
    pub accept: &'a str,
    pub request_id: &'a str,
    pub stream: bool,
    /// An Anthropic stream may pass through as Anthropic events (nothing to restore into it).
    pub native_streams: bool,
    /// The client asked for a final usage chunk (`stream_options.include_usage`).
    pub include_usage: bool,
    /// The attempt's `traceparent` (a child of Meridian's request span) and the caller's
    /// `tracestate`.
    pub traceparent: Option<String>,
    pub tracestate: Option<&'a str>,
}

impl Outgoing<'_> {
    fn base(&self) -> &str {
        let replica = self
            .provider
            .pool
            .as_ref()
            .zip(self.replica)
            .and_then(|(p, i)| p.replicas.get(i));
        replica
            .map_or(&self.provider.base_url, |r| &r.base_url)
            .as_str()
            .trim_end_matches('/')
    }

    fn client_header(&self, name: &str) -> Option<&str> {
        crate::headers::get(self.client_headers, name)
    }

    /// Headers every wire sends: never a client credential.
    fn common_headers(&self) -> Vec<(String, String)> {
        let mut h = vec![
            ("content-type".to_string(), "application/json".to_string()),
            ("accept".to_string(), self.accept.to_string()),
            ("x-request-id".to_string(), self.request_id.to_string()),
        ];
        if let Some(tp) = &self.traceparent {
            h.push((crate::trace::TRACEPARENT.to_string(), tp.clone()));
        }
        if let Some(ts) = self.tracestate {
            h.push((crate::trace::TRACESTATE.to_string(), ts.to_string()));
        }
        h
    }

    /// A known length rather than chunked encoding: some engines' servers read only
    /// content-length bodies.
    fn finish(
        &self,
        url: String,
        mut headers: Vec<(String, String)>,
        body: Vec<u8>,
        wire: Wire,
    ) -> OutboundRequest {
        headers.push(("content-length".into(), body.len().to_string()));
        // A vLLM replica of a pool is asked to report its load on its answer.
        let read_load = self.replica.is_some()
            && self
                .provider
                .pool
                .as_ref()
                .is_some_and(|p| p.engine == crate::policy::Engine::Vllm);
        if read_load {
            headers.push((crate::transport::LOAD_FORMAT_HEADER.into(), "text".into()));
        }
        OutboundRequest {
            url,
            headers,
            body,
            wire,
            idle_timeout_ms: 0,
            method: crate::transport::UpMethod::Post,
            all_headers: false,
            read_load,
        }
    }
}

/// The operator's key for a provider, from the Spin variable its `key_secret` names (never
/// from the client): `Ok(None)` for a provider that takes none, `Err` naming the variable when
/// it is unset or empty.
pub fn provider_key(
    provider: &Provider,
    secret: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>, String> {
    let Some(name) = &provider.key_secret else {
        return Ok(None);
    };
    match secret(name).filter(|k| !k.is_empty()) {
        Some(key) => Ok(Some(key)),
        None => Err(format!(
            "its key is not set: give the Spin variable `{name}` a value"
        )),
    }
}

/// One provider's request, on its own wire.
pub fn request(o: &Outgoing<'_>) -> Result<OutboundRequest, Failure> {
    match o.provider.kind {
        WireKind::OpenAi => openai::request(o),
        WireKind::Azure => azure::request(o),
        WireKind::Anthropic => anthropic::request(o),
    }
}

/// The capabilities a provider's wire can carry for a client protocol: what it has fields for,
/// directly or through translation. A request that needs one the wire lacks excludes that
/// provider whatever the policy grants.
pub fn carries(provider: &Provider, endpoint: Endpoint) -> crate::policy::CapSet {
    match provider.kind {
        WireKind::OpenAi => openai::carries(endpoint, provider.responses),
        WireKind::Azure => azure::carries(endpoint),
        WireKind::Anthropic => anthropic::carries(endpoint),
    }
}

pub use crate::transport::Wire;

/// The transport, with answers translated to the OpenAI wire.
pub struct WireTransport<'a, T> {
    pub inner: &'a T,
    /// The most of a whole answer held for translation (the deployment's response limit).
    pub max_response_bytes: usize,
}

enum Translate {
    Stream(Box<chat_from_messages::StreamTranslator>),
    Whole {
        buf: Vec<u8>,
        created: u64,
        ended: bool,
        limit: usize,
    },
}

pub struct WireBody<B> {
    inner: B,
    translate: Option<Translate>,
}

/// Translation reads one upstream chunk per call and returns what it made of it, which may be
/// nothing (an Anthropic `ping`, part of an event, part of a whole answer): an empty chunk. The
/// caller (the attempt loop, the stream pump) is thus back in control after every upstream read
/// and applies the first-byte, idle, overall and stream deadlines to translated answers exactly
/// as to answers passed through: one mechanism for every wire.
impl<B: BodyStream> BodyStream for WireBody<B> {
    async fn next_chunk(&mut self, timeout_ms: u64) -> Option<Result<Vec<u8>, Failure>> {
        match &mut self.translate {
            None => self.inner.next_chunk(timeout_ms).await,
            Some(Translate::Stream(t)) => match self.inner.next_chunk(timeout_ms).await {
                Some(Ok(c)) => Some(Ok(t.feed(&c))),
                other => other,
            },
            Some(Translate::Whole {
                buf,
                created,
                ended,
                limit,
            }) => {
                if *ended {
                    return None;
                }
                match self.inner.next_chunk(timeout_ms).await {
                    Some(Ok(c)) if buf.len() + c.len() <= *limit => {
                        buf.extend(c);
                        Some(Ok(Vec::new()))
                    }
                    Some(Ok(_)) => Some(Err(Failure::Malformed(format!(
                        "response larger than {limit} bytes"
                    )))),
                    Some(Err(e)) => Some(Err(e)),
                    None => {
                        *ended = true;
                        let whole = std::mem::take(buf);
                        Some(Ok(match serde_json::from_slice(&whole) {
                            Ok(v) => chat_from_messages::response(&v, *created)
                                .to_string()
                                .into_bytes(),
                            Err(_) => whole,
                        }))
                    }
                }
            }
        }
    }
}

impl<T: Transport> Transport for WireTransport<'_, T> {
    type Body = WireBody<T::Body>;

    async fn send(
        &self,
        req: OutboundRequest,
        timeout_ms: u64,
    ) -> Result<UpResponse<Self::Body>, Failure> {
        let wire = req.wire;
        // Only a translated answer needs the time (its `created`): no clock call otherwise.
        let created = match wire {
            Wire::Anthropic { .. } => self.inner.unix_ms() / 1000,
            _ => 0,
        };
        let up = self.inner.send(req, timeout_ms).await?;
        let translate = match wire {
            Wire::Anthropic {
                stream,
                include_usage,
            } if (200..300).contains(&up.status) => Some(if stream {
                Translate::Stream(Box::new(chat_from_messages::StreamTranslator::new(
                    created,
                    include_usage,
                )))
            } else {
                Translate::Whole {
                    buf: Vec::new(),
                    created,
                    ended: false,
                    limit: self.max_response_bytes,
                }
            }),
            _ => None,
        };
        Ok(UpResponse {
            status: up.status,
            headers: up.headers,
            body: WireBody {
                inner: up.body,
                translate,
            },
            dialect: match wire {
                Wire::AnthropicNative => crate::sse::Dialect::Anthropic,
                Wire::ResponsesNative => crate::sse::Dialect::Responses,
                _ => up.dialect,
            },
        })
    }

    async fn sleep(&self, ms: u64) {
        self.inner.sleep(ms).await
    }

    fn now_ms(&self) -> u64 {
        self.inner.now_ms()
    }

    fn unix_ms(&self) -> u64 {
        self.inner.unix_ms()
    }
}

#[cfg(test)]
mod tests {
    use super::body_with;
    use proptest::prelude::*;
    use serde_json::{json, Map, Value};

    /// What `body_with` stands for: the client's body copied, each field inserted, and the
    /// copy written by serde_json.
    fn copied(body: &Map<String, Value>, set: &[(&str, &Value)]) -> Vec<u8> {
        let mut b = body.clone();
        for (k, v) in set {
            b.insert((*k).to_string(), (*v).clone());
        }
        serde_json::to_vec(&b).unwrap()
    }

    proptest! {
        #[test]
        fn a_body_with_fields_set_is_the_copy_with_them_inserted(
            keys in proptest::collection::vec(
                prop_oneof![
                    Just("model".to_string()),
                    Just("store".to_string()),
                    Just("messages".to_string()),
                    "[a-z]{1,3}",
                ],
                0..8,
            ),
            store in any::<bool>(),
            both in any::<bool>(),
        ) {
            let mut body = Map::new();
            for (i, k) in keys.iter().enumerate() {
                body.insert(k.to_string(), json!([i, {"role": "user", "content": "hé \"x\""}]));
            }
            let model = Value::String("up/model-1".into());
            let flag = Value::Bool(store);
            let set: Vec<(&str, &Value)> = if both {
                vec![("model", &model), ("store", &flag)]
            } else {
                vec![("model", &model)]
            };
            prop_assert_eq!(body_with(&body, &set).unwrap(), copied(&body, &set));
        }
    }
}
