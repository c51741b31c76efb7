//! The interface to the world outside the core, as data: one request to one upstream, its
//! response and body, what can go wrong with it ([`Failure`]), the [`Transport`] that sends it
//! (wasi:http in the adapters, a scripted double in tests), and one [`Attempt`] as the audit
//! keeps it. At the bottom of the layers: the attempt loop, the wires, limits and the audit
//! all speak it.

use crate::policy::FallbackOn;

/// One request to one upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboundRequest {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// How the answer must be translated (`crate::wire::WireTransport` does it).
    pub wire: Wire,
    /// The plan's idle timeout (set by the attempt loop): the most silence a body may have,
    /// streamed or whole. A transport that can have its runtime enforce it (WASI's between-bytes timeout)
    /// needs no timer of its own for a read whose wait is this long; 0 when not set.
    pub idle_timeout_ms: u64,
    /// `POST` for inference; `GET` or `DELETE` for a stored response.
    pub method: UpMethod,
    /// Every response header is wanted (the policy passes the provider's `x-ratelimit-*` on:
    /// `expose_ratelimit_headers`). Otherwise a transport may give only [`READ_HEADERS`]: a
    /// runtime charges for each header it hands over, and a provider sends twenty or more.
    pub all_headers: bool,
    /// The answer's [`LOAD_HEADER`] is wanted too: a pool's replica reports its load there
    /// ([`crate::pool`]).
    pub read_load: bool,
}

/// The response headers Meridian reads from a provider's answer (passed on, or acted on) when a
/// request does not ask for all of them.
pub const READ_HEADERS: &[&str] = &["content-type", "retry-after"];

/// Where an engine reports its load on an answer when asked (ORCA's endpoint load report, as
/// vLLM writes it: `TEXT named_metrics.num_requests_waiting=2.0, …`).
pub const LOAD_HEADER: &str = "endpoint-load-metrics";

/// The request header that asks a vLLM replica for that report, in its text form.
pub const LOAD_FORMAT_HEADER: &str = "endpoint-load-metrics-format";

/// The methods Meridian sends upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UpMethod {
    #[default]
    Post,
    Get,
    Delete,
}

impl OutboundRequest {
    /// The first value of a header (names are lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::headers::get(&self.headers, name)
    }
}

/// Why an attempt did not produce an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    Connect(String),
    /// Which phase ran out of time: "headers", "first byte", "body" or "deadline".
    Timeout(&'static str),
    Status {
        status: u16,
        retry_after_ms: Option<u64>,
    },
    Malformed(String),
    /// Any other transport problem (protocol error, reset).
    Transport(String),
    /// The candidate cannot be called as configured (e.g. its key is not set); no request sent.
    Config(String),
    /// The request has a field (named, as a JSON path) that the candidate's API cannot express;
    /// no request sent.
    Untranslatable(String),
    /// Another candidate answered first while this one was hedged against it.
    Cancelled,
    /// A guard stopped the request while this attempt ran (its cost is counted).
    Stopped,
}

impl Failure {
    pub fn label(&self) -> String {
        match self {
            // What went wrong in the transport is for the operator's log only: `detail`.
            Failure::Connect(_) => "connect error".into(),
            Failure::Timeout(phase) => format!("timeout ({phase})"),
            Failure::Status { status, .. } => format!("status {status}"),
            Failure::Malformed(_) => "malformed response".into(),
            Failure::Transport(_) => "transport error".into(),
            // What is missing (a secret's name) is for the operator's log only: `detail`.
            Failure::Config(_) => "not configured".into(),
            Failure::Untranslatable(field) => format!("cannot take {field}"),
            Failure::Cancelled => "cancelled (another candidate answered first)".into(),
            Failure::Stopped => "cancelled (a guard stopped the request)".into(),
        }
    }

    /// What only the operator's log shows: why a candidate is not configured, what the
    /// transport said, what was wrong with an answer.
    pub fn detail(&self) -> Option<String> {
        match self {
            Failure::Config(why)
            | Failure::Connect(why)
            | Failure::Malformed(why)
            | Failure::Transport(why) => Some(why.clone()),
            _ => None,
        }
    }

    /// Whether the plan says to move on (or retry) after this failure.
    pub fn triggers(&self, on: &FallbackOn) -> bool {
        match self {
            Failure::Connect(_) | Failure::Transport(_) => on.connect,
            Failure::Timeout(_) => on.timeout,
            Failure::Status { status, .. } => on.statuses.contains(status),
            Failure::Malformed(_) => on.malformed,
            Failure::Config(_)
            | Failure::Untranslatable(_)
            | Failure::Cancelled
            | Failure::Stopped => true,
        }
    }
}

pub struct UpResponse<B> {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: B,
    /// The event format a stream body uses (OpenAI's unless the wire says otherwise).
    pub dialect: crate::sse::Dialect,
}

/// A response body read chunk by chunk.
#[allow(async_fn_in_trait)]
pub trait BodyStream {
    /// The next chunk; `None` at the end. Gives `Failure::Timeout("body")` after `timeout_ms`
    /// of silence.
    async fn next_chunk(&mut self, timeout_ms: u64) -> Option<Result<Vec<u8>, Failure>>;
}

/// The waits of a body read chunk by chunk against a deadline, reading the clock (a host call)
/// only when it must. Each wait is granted out of the time known to be left at the last
/// reading, and the clock is read again only when what is left of that is shorter than an idle
/// wait: the waits granted since a reading never add up to more than the time it left, so the
/// deadline is kept exactly as if the clock were read before every chunk. Under the default
/// plan (60 s idle, a 600 s stream deadline) a stream reads the clock once every ten chunks
/// rather than once per chunk; near the deadline, before every chunk.
#[derive(Debug, Clone)]
pub struct Waits {
    deadline_ms: u64,
    idle_ms: u64,
    read_ms: u64,
    granted_ms: u64,
}

impl Waits {
    /// Waits of at most `idle_ms` each, until `deadline_ms` on the transport's monotonic clock.
    pub fn new(deadline_ms: u64, idle_ms: u64) -> Waits {
        Waits {
            deadline_ms,
            idle_ms: idle_ms.max(1),
            read_ms: 0,
            // Nothing is known yet: the first wait reads the clock.
            granted_ms: u64::MAX,
        }
    }

    /// Waits that follow one already granted at the reading `read_ms`: `granted_ms` of what
    /// that reading left, which has ended (the wait for an answer's headers, from the reading
    /// its attempt started at). The first wait needs no reading of its own when enough is left
    /// after that grant. The grant is counted from the attempt's reading, and the transport's
    /// own wait starts after it, once the request is built and handed over: a response that
    /// wins a race against its timer may come that much past the grant, so the deadline may be
    /// passed by as much (well under a millisecond, against seconds of deadline).
    pub fn after(deadline_ms: u64, idle_ms: u64, read_ms: u64, granted_ms: u64) -> Waits {
        Waits {
            deadline_ms,
            idle_ms: idle_ms.max(1),
            read_ms,
            granted_ms,
        }
    }

    /// The next wait, or `None` once the deadline has passed.
    pub fn next(&mut self, now: impl Fn() -> u64) -> Option<u64> {
        let known = self
            .deadline_ms
            .saturating_sub(self.read_ms)
            .saturating_sub(self.granted_ms);
        let left = if known >= self.idle_ms {
            known
        } else {
            self.read_ms = now();
            self.granted_ms = 0;
            self.deadline_ms.saturating_sub(self.read_ms)
        };
        if left == 0 {
            return None;
        }
        let wait = self.idle_ms.min(left);
        self.granted_ms = self.granted_ms.saturating_add(wait);
        Some(wait)
    }

    /// The last reading of the clock: at or before the start of the current wait.
    pub fn read_ms(&self) -> u64 {
        self.read_ms
    }

    /// The wait's length is the whole idle wait (not shortened by the deadline).
    pub fn is_idle(&self, wait_ms: u64) -> bool {
        wait_ms >= self.idle_ms
    }
}

/// The next chunk of `body`, with a wait of `wait_ms` that began at `began_ms` or later (on
/// `now`'s clock; [`Waits::read_ms`]). A transport may leave an idle-length wait to its runtime
/// (WASI's between-bytes timeout, set from the plan), which then reports a failed read rather
/// than a timeout, and not every runtime says why: a read that fails once (nearly) the whole
/// wait has passed since `began_ms` is that timeout, and reads as one. The clock is read only
/// when a read fails.
pub async fn next_within<B: BodyStream>(
    now: impl Fn() -> u64,
    body: &mut B,
    wait_ms: u64,
    began_ms: u64,
) -> Option<Result<Vec<u8>, Failure>> {
    match body.next_chunk(wait_ms).await {
        Some(Err(Failure::Transport(_)))
            if now().saturating_sub(began_ms) >= wait_ms.saturating_sub(wait_ms / 20) =>
        {
            Some(Err(Failure::Timeout("body")))
        }
        r => r,
    }
}

/// What the attempt loop needs from the world.
#[allow(async_fn_in_trait)]
pub trait Transport {
    type Body: BodyStream;
    /// Sends a request and waits for the response headers, at most `timeout_ms`.
    /// Dropping the future cancels the request.
    async fn send(
        &self,
        req: OutboundRequest,
        timeout_ms: u64,
    ) -> Result<UpResponse<Self::Body>, Failure>;
    async fn sleep(&self, ms: u64);
    /// A monotonic clock, in milliseconds.
    fn now_ms(&self) -> u64;
    /// The wall clock, in milliseconds since the Unix epoch (for `Retry-After` dates).
    fn unix_ms(&self) -> u64;
}

/// One attempt, for the audit trail: the failure is kept as data and rendered where it is shown
/// (`Failure::label` for anyone, `Failure::detail` for the operator's log only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub provider: String,
    /// `None` for the attempt that answered.
    pub failure: Option<Failure>,
    /// From its start to its end (for the answering attempt: its first chunk, or its whole
    /// answer when it does not stream).
    pub ms: u64,
    /// Started by hedging rather than by a failure.
    pub hedge: bool,
    /// Its place in the order requests were built (0, 1, …): the key of its trace span.
    pub seq: u32,
    /// When it started, on the transport's monotonic clock.
    pub at_ms: u64,
    /// The model it asked its provider for.
    pub model: String,
    /// The pool's replica it went to, for a provider with a pool.
    pub replica: Option<String>,
}

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
    /// A Responses stream from a provider that serves the API, checked as its own events.
    ResponsesNative,
}
