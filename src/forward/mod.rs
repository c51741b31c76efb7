//! The attempt loop: try the decision's candidates in order, fall back on the triggers the plan
//! names, retry with backoff, honour `Retry-After` within the deadline, hedge when asked.
//!
//! Generic over [`Transport`], so it runs natively in tests and over `wasi:http` in the component.

use futures::future::{self, Either};
use futures::FutureExt;

use crate::decide::{Candidate, Decision};
use crate::policy::{FallbackOn, Plan};
use crate::sse::Usage;

#[cfg(test)]
mod tests;

/// One request to one upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboundRequest {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
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
    /// Another candidate answered first while this one was hedged against it.
    Cancelled,
}

impl Failure {
    pub fn label(&self) -> String {
        match self {
            Failure::Connect(why) => format!("connect error ({why})"),
            Failure::Timeout(phase) => format!("timeout ({phase})"),
            Failure::Status { status, .. } => format!("status {status}"),
            Failure::Malformed(why) => format!("malformed response ({why})"),
            Failure::Transport(why) => format!("transport error ({why})"),
            // What is missing (a secret's name) is for the operator's log only: `detail`.
            Failure::Config(_) => "not configured".into(),
            Failure::Cancelled => "cancelled (another candidate answered first)".into(),
        }
    }

    /// What only the operator's log shows: why a candidate is not configured.
    pub fn detail(&self) -> Option<String> {
        match self {
            Failure::Config(why) => Some(why.clone()),
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
            Failure::Config(_) | Failure::Cancelled => true,
        }
    }
}

pub struct UpResponse<B> {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: B,
}

/// A response body read chunk by chunk.
#[allow(async_fn_in_trait)]
pub trait BodyStream {
    /// The next chunk; `None` at the end. Gives `Failure::Timeout("body")` after `timeout_ms`
    /// of silence.
    async fn next_chunk(&mut self, timeout_ms: u64) -> Option<Result<Vec<u8>, Failure>>;
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
    fn now_ms(&self) -> u64;
}

/// One attempt, for the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub provider: String,
    /// `None` for the attempt that answered. Safe to show any caller.
    pub failure: Option<String>,
    /// For the operator's log only (e.g. which secret is unset).
    pub detail: Option<String>,
    pub ms: u64,
    /// Started by hedging rather than by a failure.
    pub hedge: bool,
}

pub enum Outcome<B> {
    /// A whole answer: a non-stream success, or an upstream error that is not a fallback trigger.
    Complete {
        candidate: usize,
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        usage: Option<Usage>,
    },
    /// A stream whose first chunk has arrived; the caller passes the rest through.
    Stream {
        candidate: usize,
        status: u16,
        headers: Vec<(String, String)>,
        first: Vec<u8>,
        body: B,
    },
    /// No candidate answered.
    Exhausted { timed_out: bool },
}

pub struct Forwarded<B> {
    pub outcome: Outcome<B>,
    pub attempts: Vec<Attempt>,
}

/// Limits that are not in the policy's plan.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_response_bytes: usize,
}

fn retry_after_ms(headers: &[(String, String)]) -> Option<u64> {
    headers
        .iter()
        .find(|(k, _)| k == "retry-after")
        .and_then(|(_, v)| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| (s * 1000.0) as u64)
}

fn usage_of(body: &[u8]) -> Result<Option<Usage>, String> {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(default)]
        usage: Option<Usage>,
    }
    serde_json::from_slice::<Probe>(body)
        .map(|p| p.usage)
        .map_err(|e| {
            e.to_string()
                .split(" at line")
                .next()
                .unwrap_or("invalid JSON")
                .to_string()
        })
}

struct Loop<'a, T: Transport> {
    t: &'a T,
    plan: &'a Plan,
    stream: bool,
    limits: Limits,
    deadline: u64,
}

type Answer<B> = Result<Outcome<B>, Failure>;

impl<T: Transport> Loop<'_, T> {
    fn remaining(&self) -> u64 {
        self.deadline.saturating_sub(self.t.now_ms())
    }

    async fn read_all(&self, body: &mut T::Body) -> Result<Vec<u8>, Failure> {
        let mut out = Vec::new();
        loop {
            let wait = self.plan.idle_timeout_ms.min(self.remaining().max(1));
            match body.next_chunk(wait).await {
                None => return Ok(out),
                Some(Err(f)) => return Err(f),
                Some(Ok(c)) => {
                    if out.len() + c.len() > self.limits.max_response_bytes {
                        return Err(Failure::Malformed(format!(
                            "response larger than {} bytes",
                            self.limits.max_response_bytes
                        )));
                    }
                    out.extend_from_slice(&c);
                }
            }
        }
    }

    /// Turns response headers into an answer or a failure.
    async fn finish(&self, candidate: usize, resp: UpResponse<T::Body>) -> Answer<T::Body> {
        let UpResponse {
            status,
            headers,
            mut body,
        } = resp;
        if self.plan.fallback_on.statuses.contains(&status) {
            return Err(Failure::Status {
                status,
                retry_after_ms: retry_after_ms(&headers),
            });
        }
        let ok = (200..300).contains(&status);
        if ok && self.stream {
            let wait = self.plan.first_byte_timeout_ms.min(self.remaining().max(1));
            return match body.next_chunk(wait).await {
                Some(Ok(first)) => Ok(Outcome::Stream {
                    candidate,
                    status,
                    headers,
                    first,
                    body,
                }),
                Some(Err(Failure::Timeout(_))) => Err(Failure::Timeout("first byte")),
                Some(Err(f)) => Err(f),
                None => Err(Failure::Malformed("empty stream".into())),
            };
        }
        let bytes = self.read_all(&mut body).await?;
        let usage = if ok {
            usage_of(&bytes).map_err(Failure::Malformed)?
        } else {
            None
        };
        Ok(Outcome::Complete {
            candidate,
            status,
            headers,
            body: bytes,
            usage,
        })
    }

    async fn attempt(
        &self,
        candidate: usize,
        build: &impl Fn(&Candidate) -> Result<OutboundRequest, Failure>,
        c: &Candidate<'_>,
    ) -> Answer<T::Body> {
        let timeout = self.plan.attempt_timeout_ms.min(self.remaining());
        let req = build(c)?;
        let resp = self.t.send(req, timeout).await?;
        self.finish(candidate, resp).await
    }
}

/// Runs the attempt loop for a decision with at least one candidate.
pub async fn forward<T: Transport>(
    t: &T,
    decision: &Decision<'_>,
    build: impl Fn(&Candidate) -> Result<OutboundRequest, Failure>,
    stream: bool,
    limits: Limits,
) -> Forwarded<T::Body> {
    let plan = &decision.plan;
    let cands = &decision.candidates;
    let start = t.now_ms();
    let lp = Loop {
        t,
        plan,
        stream,
        limits,
        deadline: start.saturating_add(plan.deadline_ms),
    };
    let mut attempts = Vec::new();
    let mut i = 0;
    let mut last_failure: Option<Failure> = None;
    let record =
        |attempts: &mut Vec<Attempt>, idx: usize, f: Option<&Failure>, began: u64, hedge: bool| {
            attempts.push(Attempt {
                provider: cands[idx].provider.0.clone(),
                failure: f.map(Failure::label),
                detail: f.and_then(Failure::detail),
                ms: t.now_ms().saturating_sub(began),
                hedge,
            });
        };

    while i < cands.len() {
        let mut tries = 0u32;
        loop {
            if lp.remaining() == 0 {
                return Forwarded {
                    outcome: Outcome::Exhausted { timed_out: true },
                    attempts,
                };
            }
            let began = t.now_ms();
            let hedge = plan
                .hedge_after_ms
                .filter(|_| tries == 0 && i + 1 < cands.len());
            let result: Vec<(usize, Answer<T::Body>, bool)> = match hedge {
                None => vec![(i, lp.attempt(i, &build, &cands[i]).await, false)],
                Some(after) => hedged(&lp, &build, cands, i, after).await,
            };
            let mut moved_on = 1;
            let mut failed = None;
            for (idx, answer, is_hedge) in result {
                match answer {
                    Ok(outcome) => {
                        record(&mut attempts, idx, None, began, is_hedge);
                        return Forwarded { outcome, attempts };
                    }
                    Err(f) => {
                        record(&mut attempts, idx, Some(&f), began, is_hedge);
                        if is_hedge {
                            moved_on = 2;
                        }
                        failed = Some(f);
                    }
                }
            }
            let Some(f) = failed else { break };
            if !f.triggers(&plan.fallback_on) {
                // The plan does not allow moving on after this failure.
                return Forwarded {
                    outcome: Outcome::Exhausted {
                        timed_out: matches!(f, Failure::Timeout(_)),
                    },
                    attempts,
                };
            }
            let retry_after = match &f {
                Failure::Status { retry_after_ms, .. } => *retry_after_ms,
                _ => None,
            };
            // A candidate that cannot be called as configured is skipped, never retried.
            let retryable = !matches!(f, Failure::Config(_));
            last_failure = Some(f);
            if retryable && moved_on == 1 && tries < plan.retries {
                let backoff = plan.backoff_ms.saturating_mul(1 << tries.min(16));
                let wait = retry_after.map_or(backoff, |r| r.max(backoff));
                if wait < lp.remaining() {
                    tries += 1;
                    t.sleep(wait).await;
                    continue;
                }
            }
            i += moved_on;
            break;
        }
    }
    Forwarded {
        outcome: Outcome::Exhausted {
            timed_out: matches!(last_failure, Some(Failure::Timeout(_))) || lp.remaining() == 0,
        },
        attempts,
    }
}

/// Starts candidate `i`; if it has not answered after `after_ms`, starts `i + 1` too. The first
/// success wins and the other future is dropped, which cancels its request.
async fn hedged<T: Transport>(
    lp: &Loop<'_, T>,
    build: &impl Fn(&Candidate) -> Result<OutboundRequest, Failure>,
    cands: &[Candidate<'_>],
    i: usize,
    after_ms: u64,
) -> Vec<(usize, Answer<T::Body>, bool)> {
    let first = lp.attempt(i, build, &cands[i]).fuse();
    let timer = lp.t.sleep(after_ms).fuse();
    futures::pin_mut!(first, timer);
    match future::select(first, timer).await {
        Either::Left((answer, _)) => vec![(i, answer, false)],
        Either::Right(((), first)) => {
            let second = lp.attempt(i + 1, build, &cands[i + 1]).fuse();
            futures::pin_mut!(second);
            match future::select(first, second).await {
                Either::Left((Ok(o), _)) => {
                    vec![(i + 1, Err(Failure::Cancelled), true), (i, Ok(o), false)]
                }
                Either::Right((Ok(o), _)) => {
                    vec![(i, Err(Failure::Cancelled), false), (i + 1, Ok(o), true)]
                }
                Either::Left((Err(f), second)) => {
                    vec![(i, Err(f), false), (i + 1, second.await, true)]
                }
                Either::Right((Err(f), first)) => {
                    let a = first.await;
                    match a {
                        Ok(o) => vec![(i + 1, Err(f), true), (i, Ok(o), false)],
                        Err(e) => vec![(i, Err(e), false), (i + 1, Err(f), true)],
                    }
                }
            }
        }
    }
}
