//! Passing a stream through under the streaming contract (see `crate::sse`).

use crate::audit::Record;
use crate::sse::{error_event, SseGuard, StreamFault};
use crate::transport::{BodyStream, Failure, Transport};

/// Where the client's bytes go.
#[allow(async_fn_in_trait)]
pub trait ChunkSink {
    /// Sends a chunk now; `Err` when the client has gone. The stream's last bytes are not sent
    /// through this: `Stream::pump` returns them.
    async fn send(&mut self, chunk: Vec<u8>) -> Result<(), String>;
}

/// A stream whose headers and first event are ready: what `api::serve` answers for a streamed
/// request, and what pumps the rest to the client.
pub struct Stream<B> {
    /// The first event (whole lines), already checked.
    pub first: Vec<u8>,
    /// Has seen `first`; watches the rest.
    pub guard: SseGuard,
    pub body: B,
    pub provider: String,
    pub request_id: String,
    pub idle_timeout_ms: u64,
    /// When the stream must be over, on the transport's monotonic clock
    /// (`plan.stream_deadline_ms` after the request started).
    pub deadline_at_ms: u64,
    /// Puts redacted personal data back into the events (`restore = true`).
    pub restore: Option<Box<crate::pii::Restorer>>,
    /// The checked OpenAI events written in the client's protocol (Anthropic clients, clients
    /// of the Responses API served over chat).
    pub to_client: Option<ToClient>,
    /// The stream is passed through in another protocol's own events: a fault ends it with
    /// that protocol's error event.
    pub native: Option<NativeEvents>,
    /// A passed-through Responses stream: the provider's response id sealed in its events.
    pub seal: Option<Box<crate::responses::IdSealer>>,
    /// The output guards: the client gets text only up to the last window they cleared.
    pub output: Option<Box<super::guards::Windows>>,
}

/// A translator from checked chat events to the client's protocol.
pub enum ToClient {
    Messages(Box<crate::wire::translate::messages_from_chat::StreamTranslator>),
    Responses(Box<crate::wire::translate::responses_from_chat::StreamTranslator>),
}

impl ToClient {
    fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        match self {
            ToClient::Messages(t) => t.feed(bytes),
            ToClient::Responses(t) => t.feed(bytes),
        }
    }
}

/// Events passed through in a protocol other than chat's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NativeEvents {
    Anthropic,
    Responses,
}

impl<B> Stream<B> {
    /// Whether the upstream's events reach the client as they came: no personal data put
    /// back, no translation, no output guard, and chat's dialect or Anthropic's passed through
    /// (a Responses stream passed through has its ids sealed). Only then may
    /// `stream_events = "framed"` leave an event unparsed.
    pub fn events_go_on_unread(&self) -> bool {
        self.restore.is_none()
            && self.to_client.is_none()
            && matches!(self.native, None | Some(NativeEvents::Anthropic))
            && self.seal.is_none()
            && self.output.is_none()
    }
}

impl<B: BodyStream> Stream<B> {
    /// Sends the first event and then every checked line as it arrives, and returns the
    /// stream's last bytes unsent: the chunk that carries the upstream's own `[DONE]`, or what
    /// was checked before a fault followed by the SSE error event. The caller writes them and
    /// ends the body in one step, so a host can put them on the wire together with the end of
    /// the body (under Nagle's algorithm an end written on its own waits for the client's
    /// delayed ACK), and it writes the log line first, since a host may stop the component as
    /// soon as the body ends. Faults: the upstream fails, truncates or garbles the stream, goes
    /// silent past the idle timeout or runs past the stream deadline. Reading stops at
    /// `[DONE]`; whatever the upstream sends after it is never read. Records the outcome and
    /// usage; an empty tail means the client has gone.
    pub async fn pump<T: Transport, S: ChunkSink>(
        mut self,
        t: &T,
        sink: &mut S,
        record: &mut Record,
    ) -> Vec<u8> {
        // Checked bytes not yet sent (the first event was checked by the attempt loop).
        let mut pending = std::mem::take(&mut self.first);
        if let Some(w) = &mut self.output {
            w.read(&pending);
        }
        if let Some(r) = &mut self.restore {
            pending = r.restore_stream(pending);
        }
        if let Some(s) = &mut self.seal {
            pending = s.feed(pending);
        }
        if let Some(m) = &mut self.to_client {
            pending = m.feed(&pending);
        }
        if let Some(w) = &mut self.output {
            w.hold(std::mem::take(&mut pending));
        }
        let mut waits = crate::transport::Waits::new(self.deadline_at_ms, self.idle_timeout_ms);
        let fault = loop {
            if self.guard.saw_done() {
                // Reading stops here, so the blank line that ends the last event may be unread.
                let close = self.guard.close();
                if !close.is_empty() {
                    let mut more = close.to_vec();
                    if let Some(r) = &mut self.restore {
                        more = r.restore_stream(more);
                    }
                    if let Some(m) = &mut self.to_client {
                        more = m.feed(&more);
                    }
                    pending.extend(more);
                }
                // The last window is judged before the end reaches the client.
                if let Some(w) = &mut self.output {
                    w.hold(std::mem::take(&mut pending));
                    match w.judge(t).await {
                        Ok(cleared) => pending = cleared,
                        Err(why) => break StreamFault::Guard(why),
                    }
                }
                self.end(record, "done");
                return pending;
            }
            if !pending.is_empty() && sink.send(std::mem::take(&mut pending)).await.is_err() {
                self.end(record, "client_gone");
                return Vec::new();
            }
            let Some(wait) = waits.next(|| t.now_ms()) else {
                break StreamFault::Deadline;
            };
            let began = waits.read_ms();
            match crate::transport::next_within(|| t.now_ms(), &mut self.body, wait, began).await {
                None => match self.guard.finish() {
                    Ok(()) => {
                        if let Some(w) = &mut self.output {
                            match w.judge(t).await {
                                Ok(cleared) => pending = cleared,
                                Err(why) => break StreamFault::Guard(why),
                            }
                        }
                        self.end(record, "done");
                        return pending;
                    }
                    Err(f) => break f,
                },
                Some(Err(Failure::Timeout(_)))
                    if !waits.is_idle(wait) && t.now_ms() >= self.deadline_at_ms =>
                {
                    break StreamFault::Deadline
                }
                Some(Err(f)) => break StreamFault::Broken(f.label()),
                Some(Ok(c)) => {
                    let fed = self.guard.feed(c);
                    if let Some(w) = &mut self.output {
                        w.read(&fed.send);
                    }
                    pending = match &mut self.restore {
                        Some(r) if !fed.send.is_empty() => r.restore_stream(fed.send),
                        _ => fed.send,
                    };
                    if let Some(s) = &mut self.seal {
                        pending = s.feed(pending);
                    }
                    if let Some(m) = &mut self.to_client {
                        pending = m.feed(&pending);
                    }
                    if let Some(w) = &mut self.output {
                        w.hold(std::mem::take(&mut pending));
                        if fed.fault.is_none() && w.full() {
                            match w.judge(t).await {
                                Ok(cleared) => pending = cleared,
                                Err(why) => break StreamFault::Guard(why),
                            }
                        }
                    }
                    if let Some(f) = fed.fault {
                        break f;
                    }
                }
            }
        };
        let mut tail = Vec::new();
        if let Some(r) = &mut self.restore {
            tail.extend(r.finish());
        }
        match self.native {
            Some(NativeEvents::Anthropic) => {
                let body =
                    crate::wire::anthropic::error_body(500, &fault.message(&self.provider), None);
                tail.extend_from_slice(b"event: error\ndata: ");
                tail.extend_from_slice(&body);
                tail.extend_from_slice(b"\n\n");
            }
            Some(NativeEvents::Responses) => {
                // The Responses API's own `error` event: its SDKs raise it.
                let body = serde_json::json!({
                    "type": "error",
                    "code": fault.code(),
                    "message": fault.message(&self.provider),
                    "param": null,
                    "sequence_number": self.guard.events,
                });
                tail.extend_from_slice(b"event: error\ndata: ");
                tail.extend_from_slice(body.to_string().as_bytes());
                tail.extend_from_slice(b"\n\n");
            }
            None => tail.extend_from_slice(&error_event(&fault, &self.provider, &self.request_id)),
        }
        match &mut self.to_client {
            Some(m) => pending.extend(m.feed(&tail)),
            None => pending.extend(tail),
        }
        self.end(record, fault.code());
        pending
    }

    /// The stream's end in the record. Only the provider's final usage is what it bills: a
    /// stream cut before it keeps its whole reservation (settled as `kept`).
    fn end(&self, record: &mut Record, outcome: &'static str) {
        record.stream_outcome = Some(outcome);
        record.usage = self.guard.usage.filter(|_| self.guard.usage_final);
        if let Some(w) = &self.output {
            record.guards.extend_from_slice(w.verdicts());
        }
    }
}
