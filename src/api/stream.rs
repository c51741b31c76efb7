//! Passing a stream through under the streaming contract (see `crate::sse`).

use crate::audit::Record;
use crate::forward::{BodyStream, Failure, Transport};
use crate::sse::{error_event, SseGuard, StreamFault};

/// Where the client's bytes go.
#[allow(async_fn_in_trait)]
pub trait ChunkSink {
    /// Sends and flushes a chunk; `Err` when the client has gone.
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
}

impl<B: BodyStream> Stream<B> {
    /// Sends the first event and then every checked line as it arrives. Ends after the
    /// upstream's own `[DONE]` (whatever follows it is dropped, a reset included), or with an SSE
    /// error event when the upstream fails, truncates or garbles the stream, goes silent past the
    /// idle timeout or runs past the stream deadline. Records the outcome and usage.
    pub async fn pump<T: Transport, S: ChunkSink>(
        mut self,
        t: &T,
        sink: &mut S,
        record: &mut Record,
    ) {
        let mut next = Some(std::mem::take(&mut self.first));
        let fault = loop {
            let chunk = match next.take() {
                Some(c) => c,
                None => {
                    let remaining = self.deadline_at_ms.saturating_sub(t.now_ms());
                    if remaining == 0 && !self.guard.saw_done() {
                        break StreamFault::Deadline;
                    }
                    let wait = self.idle_timeout_ms.min(remaining.max(1));
                    match self.body.next_chunk(wait).await {
                        // After `[DONE]` the stream is complete, however the body ends.
                        None | Some(Err(_)) if self.guard.saw_done() => {
                            return self.end(record, "done")
                        }
                        None => match self.guard.finish() {
                            Ok(()) => return self.end(record, "done"),
                            Err(f) => break f,
                        },
                        Some(Err(Failure::Timeout(_)))
                            if wait < self.idle_timeout_ms && t.now_ms() >= self.deadline_at_ms =>
                        {
                            break StreamFault::Deadline
                        }
                        Some(Err(f)) => break StreamFault::Broken(f.label()),
                        Some(Ok(c)) => {
                            let fed = self.guard.feed(&c);
                            if !fed.send.is_empty() && sink.send(fed.send).await.is_err() {
                                return self.end(record, "client_gone");
                            }
                            match fed.fault {
                                Some(f) => break f,
                                None => continue,
                            }
                        }
                    }
                }
            };
            // The first event: checked by the attempt loop already.
            if !chunk.is_empty() && sink.send(chunk).await.is_err() {
                return self.end(record, "client_gone");
            }
        };
        // Best effort: if the client is gone too, there is no one left to tell.
        let _ = sink
            .send(error_event(&fault, &self.provider, &self.request_id))
            .await;
        self.end(record, fault.code())
    }

    fn end(&self, record: &mut Record, outcome: &'static str) {
        record.stream_outcome = Some(outcome);
        record.usage = self.guard.usage;
    }
}
