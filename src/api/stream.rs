//! Passing a stream through under the streaming contract (see `crate::sse`).

use crate::forward::BodyStream;
use crate::sse::{error_event, SseGuard, StreamFault, Usage};

/// Where the client's bytes go.
#[allow(async_fn_in_trait)]
pub trait ChunkSink {
    /// Sends and flushes a chunk; `Err` when the client has gone.
    async fn send(&mut self, chunk: Vec<u8>) -> Result<(), String>;
}

#[derive(Debug, Clone, PartialEq)]
pub struct StreamEnd {
    /// "done", "client_gone", or the fault's code.
    pub outcome: &'static str,
    pub usage: Option<Usage>,
    pub events: u64,
}

/// Sends `first` and then every chunk of `body` as it arrives. Ends with the upstream's own
/// `[DONE]`, or with an SSE error event when the upstream fails, truncates or garbles the stream.
pub async fn pump<B: BodyStream, S: ChunkSink>(
    first: Vec<u8>,
    body: &mut B,
    sink: &mut S,
    provider: &str,
    request_id: &str,
    idle_timeout_ms: u64,
) -> StreamEnd {
    let mut guard = SseGuard::new();
    let mut next = Some(first);
    let fault = loop {
        let chunk = match next.take() {
            Some(c) => c,
            None => match body.next_chunk(idle_timeout_ms).await {
                None => match guard.finish() {
                    Ok(()) => {
                        return StreamEnd {
                            outcome: "done",
                            usage: guard.usage,
                            events: guard.events,
                        }
                    }
                    Err(f) => break f,
                },
                Some(Err(f)) => break StreamFault::Broken(f.label()),
                Some(Ok(c)) => c,
            },
        };
        if let Err(f) = guard.feed(&chunk) {
            break f;
        }
        if sink.send(chunk).await.is_err() {
            return StreamEnd {
                outcome: "client_gone",
                usage: guard.usage,
                events: guard.events,
            };
        }
    };
    // Best effort: if the client is gone too, there is no one left to tell.
    let _ = sink.send(error_event(&fault, provider, request_id)).await;
    StreamEnd {
        outcome: fault.code(),
        usage: guard.usage,
        events: guard.events,
    }
}
