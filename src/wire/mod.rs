//! The providers' own wires. Requests are built per provider kind in the inference flow; this
//! module translates what comes back, so the attempt loop, the stream guard and the pump only
//! ever see the OpenAI wire: `WireTransport` wraps the real transport and, for an Anthropic
//! provider's successful answer, turns the body into OpenAI JSON (whole) or OpenAI SSE (as it
//! streams). Error answers pass unchanged (they are summarised, never passed on).

pub mod anthropic;
pub mod fields;
pub mod messages;

use crate::forward::{BodyStream, Failure, OutboundRequest, Transport, UpResponse};

/// What the provider speaks, as far as its answer needs translating.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Wire {
    /// OpenAI and Azure OpenAI: nothing to translate.
    #[default]
    OpenAi,
    Anthropic {
        stream: bool,
        /// The client asked for a final usage chunk (`stream_options.include_usage`).
        include_usage: bool,
    },
    /// Anthropic to an Anthropic client: nothing translated, streams checked as Anthropic's.
    AnthropicNative,
}

/// The transport, with answers translated to the OpenAI wire.
pub struct WireTransport<'a, T> {
    pub inner: &'a T,
    /// The most of a whole answer held for translation (the deployment's response limit).
    pub max_response_bytes: usize,
}

enum Translate {
    Stream(Box<anthropic::StreamTranslator>),
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
                            Ok(v) => anthropic::response(&v, *created).to_string().into_bytes(),
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
                Translate::Stream(Box::new(anthropic::StreamTranslator::new(
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
            dialect: if wire == Wire::AnthropicNative {
                crate::sse::Dialect::Anthropic
            } else {
                up.dialect
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
mod tests;
