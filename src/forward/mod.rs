//! The attempt loop: try the decision's candidates in order, fall back on the triggers the plan
//! names, retry with backoff, honour `Retry-After` within the deadline, hedge when asked.
//!
//! Generic over [`Transport`], so it runs natively in tests and over `wasi:http` in the component.

use futures::future::{self, Either};
use futures::FutureExt;

use crate::decide::{Candidate, Decision};
use crate::policy::Plan;
use crate::sse::SseGuard;
use crate::usage::Usage;

pub use crate::transport::{
    next_within, Attempt, BodyStream, Failure, OutboundRequest, Transport, UpMethod, UpResponse,
    Waits,
};

#[cfg(test)]
mod tests;

pub enum Outcome<B> {
    /// A whole answer: a non-stream success, or an upstream error that is not a fallback trigger.
    Complete {
        candidate: usize,
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        usage: Option<Usage>,
    },
    /// A stream whose first event has arrived and is not an error: `first` is what may be sent
    /// (whole lines), `guard` has seen it and watches the rest.
    Stream {
        candidate: usize,
        status: u16,
        headers: Vec<(String, String)>,
        first: Vec<u8>,
        guard: SseGuard,
        body: B,
    },
    /// No candidate answered; `gated`: the [`Gate`] let no further attempt start.
    Exhausted { timed_out: bool, gated: bool },
}

/// Asked before every attempt after the first (a retry, a fallback, the next step of a route),
/// so that what those attempts may cost is covered before they start. A hedge started within a
/// step was covered with the step.
#[allow(async_fn_in_trait)]
pub trait Gate {
    /// May `next` more attempts start (two when the step may hedge), after `attempts`? `false`
    /// ends the loop with what has failed so far.
    async fn admit(&mut self, attempts: &[Attempt], next: u64) -> bool;
}

/// No gate: every attempt may start.
pub struct Open;

impl Gate for Open {
    async fn admit(&mut self, _: &[Attempt], _: u64) -> bool {
        true
    }
}

pub struct Forwarded<B> {
    pub outcome: Outcome<B>,
    pub attempts: Vec<Attempt>,
}

/// The attempts of a loop as it runs, kept outside it: a loop that is dropped (a guard stopped
/// the request) leaves what it did here, and [`Log::stop`] records what was in flight.
#[derive(Default)]
pub struct Log {
    attempts: std::cell::RefCell<Vec<Attempt>>,
    /// Requests sent and not yet recorded.
    flying: std::cell::RefCell<Vec<Flying>>,
}

/// A request sent and not yet recorded: its candidate's position, its build order, start, and
/// whether it hedges.
struct Flying {
    index: usize,
    seq: u32,
    at_ms: u64,
    hedge: bool,
}

impl Log {
    fn fly(&self, index: usize, seq: u32, at_ms: u64, hedge: bool) {
        self.flying.borrow_mut().push(Flying {
            index,
            seq,
            at_ms,
            hedge,
        });
    }

    fn push(&self, a: Attempt) {
        self.flying.borrow_mut().retain(|f| f.seq != a.seq);
        self.attempts.borrow_mut().push(a);
    }

    /// The attempts so far (for a gate: a copy, since the gate may wait).
    fn so_far(&self) -> Vec<Attempt> {
        self.attempts.borrow().clone()
    }

    fn is_empty(&self) -> bool {
        self.attempts.borrow().is_empty()
    }

    /// Records every request still in flight as stopped at `now_ms`: the loop over `cands`
    /// was dropped.
    pub fn stop(&self, now_ms: u64, cands: &[Candidate<'_>]) {
        let flying = std::mem::take(&mut *self.flying.borrow_mut());
        let mut attempts = self.attempts.borrow_mut();
        for f in flying {
            let Some(c) = cands.get(f.index) else {
                continue;
            };
            attempts.push(Attempt {
                provider: c.provider.0.to_string(),
                failure: Some(Failure::Stopped),
                ms: now_ms.saturating_sub(f.at_ms),
                hedge: f.hedge,
                seq: f.seq,
                at_ms: f.at_ms,
                model: c.upstream_model.to_string(),
                replica: c.replica.map(|(r, _)| r.to_string()),
            });
        }
        attempts.sort_by_key(|a| a.seq);
    }

    /// The attempt that answered is recorded as stopped: a guard stopped the request after the
    /// answer came, and it is not used (what the provider may bill for it stays counted).
    pub fn stop_answered(&self) {
        for a in self.attempts.borrow_mut().iter_mut() {
            if a.failure.is_none() {
                a.failure = Some(Failure::Stopped);
            }
        }
    }

    /// The attempts, in the order they ended (stopped ones by their start).
    pub fn take(&self) -> Vec<Attempt> {
        std::mem::take(&mut *self.attempts.borrow_mut())
    }
}

/// Limits that are not in the policy's plan.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_response_bytes: usize,
}

/// `Retry-After` in either form: delay-seconds, or an HTTP date (`now_unix_ms` is the wall
/// clock); a date in the past means "now".
fn retry_after_ms(headers: &[(String, String)], now_unix_ms: u64) -> Option<u64> {
    let v = crate::headers::get(headers, "retry-after")?.trim();
    if let Ok(s) = v.parse::<f64>() {
        return (s.is_finite() && s >= 0.0).then_some((s * 1000.0) as u64);
    }
    let at = httpdate::parse_http_date(v).ok()?;
    let at_ms = at
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_millis()
        .min(u128::from(u64::MAX)) as u64;
    Some(at_ms.saturating_sub(now_unix_ms))
}

/// A whole answer's usage; the answer must be a JSON object ([`crate::json::Object`]).
fn usage_of(body: &[u8]) -> Result<Option<Usage>, String> {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(default)]
        usage: Option<Usage>,
    }
    serde_json::from_slice::<crate::json::Object<Probe>>(body)
        .map(|p| p.0.usage)
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
    /// Requests built so far.
    sent: std::cell::Cell<u32>,
}

type Answer<B> = Result<Outcome<B>, Failure>;

impl<T: Transport> Loop<'_, T> {
    fn remaining(&self) -> u64 {
        self.deadline.saturating_sub(self.t.now_ms())
    }

    /// What an attempt started at `now` may wait for its response's headers.
    fn send_grant(&self, now: u64) -> u64 {
        self.plan
            .attempt_timeout_ms
            .min(self.deadline.saturating_sub(now))
    }

    /// A whole answer, read after its headers came for the attempt started at `at`.
    async fn read_all(&self, body: &mut T::Body, at: u64) -> Result<Vec<u8>, Failure> {
        let mut out = Vec::new();
        let mut waits = Waits::after(
            self.deadline,
            self.plan.idle_timeout_ms,
            at,
            self.send_grant(at),
        );
        loop {
            // Kept on every read: an answer that keeps trickling (or a translated one whose
            // chunks yield nothing yet) still ends at the deadline.
            let Some(wait) = waits.next(|| self.t.now_ms()) else {
                return Err(Failure::Timeout("deadline"));
            };
            match next_within(|| self.t.now_ms(), body, wait, waits.read_ms()).await {
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
    async fn finish(
        &self,
        candidate: usize,
        at: u64,
        resp: UpResponse<T::Body>,
    ) -> Answer<T::Body> {
        let UpResponse {
            status,
            headers,
            mut body,
            dialect,
        } = resp;
        if self.plan.fallback_on.statuses.contains(&status) {
            return Err(Failure::Status {
                status,
                retry_after_ms: retry_after_ms(&headers, self.t.unix_ms()),
            });
        }
        let ok = (200..300).contains(&status);
        if ok && self.stream {
            return self
                .first_event(candidate, status, headers, body, dialect)
                .await;
        }
        let bytes = self.read_all(&mut body, at).await?;
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

    /// Reads a stream until its first whole event, which must be a JSON event that is not an
    /// error: until then nothing has reached the client, so a garbage or error start, an empty
    /// stream or a silent one is a failure the plan may fall back on.
    async fn first_event(
        &self,
        candidate: usize,
        status: u16,
        headers: Vec<(String, String)>,
        mut body: T::Body,
        dialect: crate::sse::Dialect,
    ) -> Answer<T::Body> {
        let started = self.t.now_ms();
        let mut guard = SseGuard::for_dialect(dialect);
        let mut first = Vec::new();
        loop {
            let now = self.t.now_ms();
            if now.saturating_sub(started) >= self.plan.first_byte_timeout_ms
                || now >= self.deadline
            {
                // Bytes that make no event (pings, an event that never ends) do not hold the
                // first-byte timeout off.
                return Err(Failure::Timeout("first byte"));
            }
            let wait = self
                .plan
                .first_byte_timeout_ms
                .saturating_sub(now.saturating_sub(started))
                .min(self.deadline.saturating_sub(now))
                .max(1);
            let chunk = match next_within(|| self.t.now_ms(), &mut body, wait, now).await {
                Some(Ok(c)) => c,
                Some(Err(Failure::Timeout(_))) => return Err(Failure::Timeout("first byte")),
                Some(Err(f)) => return Err(f),
                None if first.is_empty() => return Err(Failure::Malformed("empty stream".into())),
                None => {
                    return Err(Failure::Malformed(
                        "the stream ended before its first event".into(),
                    ))
                }
            };
            let fed = guard.feed(chunk);
            if let Some(fault) = fed.fault {
                return Err(Failure::Malformed(format!(
                    "the stream's first event: {}",
                    fault.message("the provider")
                )));
            }
            first.extend_from_slice(&fed.send);
            if guard.saw_upstream_error() {
                return Err(Failure::Malformed(
                    "the stream's first event is an error".into(),
                ));
            }
            if guard.events > 0 || guard.saw_done() {
                return Ok(Outcome::Stream {
                    candidate,
                    status,
                    headers,
                    first,
                    guard,
                    body,
                });
            }
        }
    }

    /// Builds and sends a candidate's request: its place in the order requests were built, when
    /// it started (`now`, a clock reading no wait has aged), and the response headers, or why
    /// not.
    async fn send(
        &self,
        build: &impl Fn(&Candidate, u32) -> Result<OutboundRequest, Failure>,
        cands: &[Candidate<'_>],
        index: usize,
        now: u64,
        log: &Log,
    ) -> Sent<T::Body> {
        let seq = self.begin();
        log.fly(index, seq, now, false);
        (
            seq,
            now,
            self.send_built(build, &cands[index], seq, now).await,
        )
    }

    /// The next request's place in the build order.
    fn begin(&self) -> u32 {
        let seq = self.sent.get();
        self.sent.set(seq.saturating_add(1));
        seq
    }

    async fn send_built(
        &self,
        build: &impl Fn(&Candidate, u32) -> Result<OutboundRequest, Failure>,
        c: &Candidate<'_>,
        seq: u32,
        now: u64,
    ) -> Result<UpResponse<T::Body>, Failure> {
        let timeout = self.send_grant(now);
        let mut req = build(c, seq)?;
        // The runtime can enforce the idle timeout between bytes, for a stream's chunks and a
        // whole answer's reads alike; a transport then needs no timer of its own for a read
        // that may wait that long (a host call to set it costs less than a timer started and
        // cancelled).
        req.idle_timeout_ms = self.plan.idle_timeout_ms;
        self.t.send(req, timeout).await
    }
}

/// One request as sent: its place in the build order, when it started, and its response
/// headers (or why not).
type Sent<B> = (u32, u64, Result<UpResponse<B>, Failure>);

/// One candidate's request: its position, the request, and whether it was started by hedging.
type Raced<B> = (usize, Sent<B>, bool);

/// The loop's end without an answer.
fn exhausted<B>(timed_out: bool, gated: bool) -> Outcome<B> {
    Outcome::Exhausted { timed_out, gated }
}

/// Runs the attempt loop for a decision with at least one candidate.
pub async fn forward<T: Transport>(
    t: &T,
    decision: &Decision<'_>,
    build: impl Fn(&Candidate, u32) -> Result<OutboundRequest, Failure>,
    stream: bool,
    limits: Limits,
    gate: &mut impl Gate,
) -> Forwarded<T::Body> {
    let log = Log::default();
    let outcome = forward_logged(t, decision, build, stream, limits, gate, &log).await;
    Forwarded {
        outcome,
        attempts: log.take(),
    }
}

/// The attempt loop, its attempts kept in `log` (which outlives the loop when it is dropped).
pub async fn forward_logged<T: Transport>(
    t: &T,
    decision: &Decision<'_>,
    build: impl Fn(&Candidate, u32) -> Result<OutboundRequest, Failure>,
    stream: bool,
    limits: Limits,
    gate: &mut impl Gate,
    log: &Log,
) -> Outcome<T::Body> {
    let plan = &decision.plan;
    let cands = &decision.candidates;
    let start = t.now_ms();
    let lp = Loop {
        t,
        plan,
        stream,
        limits,
        deadline: start.saturating_add(plan.deadline_ms),
        sent: std::cell::Cell::new(0),
    };
    let mut i = 0;
    let mut last_failure: Option<Failure> = None;
    let record =
        |log: &Log, idx: usize, f: Option<Failure>, (seq, at_ms): (u32, u64), hedge: bool| {
            log.push(Attempt {
                provider: cands[idx].provider.0.to_string(),
                failure: f,
                ms: t.now_ms().saturating_sub(at_ms),
                hedge,
                seq,
                at_ms,
                model: cands[idx].upstream_model.to_string(),
                replica: cands[idx].replica.map(|(r, _)| r.to_string()),
            });
        };

    // A clock reading no wait has aged since: the first attempt starts at `start`, so the clock
    // is read once before it (each reading is a host call).
    let mut fresh = Some(start);
    while i < cands.len() {
        let mut tries = 0u32;
        loop {
            let now = fresh.take().unwrap_or_else(|| t.now_ms());
            if now >= lp.deadline {
                return exhausted(true, false);
            }
            let hedge = plan
                .hedge_after_ms
                .filter(|_| tries == 0 && i + 1 < cands.len());
            let now = if log.is_empty() {
                now
            } else {
                if !gate
                    .admit(&log.so_far(), 1 + u64::from(hedge.is_some()))
                    .await
                {
                    return exhausted(matches!(last_failure, Some(Failure::Timeout(_))), true);
                }
                // The gate may have waited on its store.
                t.now_ms()
            };
            // The response headers: from this candidate, or (hedging) from whichever of it and
            // the next one answers first; the other is cancelled.
            let headers: Vec<Raced<T::Body>> = match hedge {
                None => vec![(i, lp.send(&build, cands, i, now, log).await, false)],
                Some(after) => hedged(&lp, &build, cands, i, after, now, log).await,
            };
            let mut moved_on = 1;
            let mut failed = None;
            for (idx, (seq, at, sent), is_hedge) in headers {
                let answer = match sent {
                    Ok(resp) => lp.finish(idx, at, resp).await,
                    Err(f) => Err(f),
                };
                match answer {
                    Ok(outcome) => {
                        record(log, idx, None, (seq, at), is_hedge);
                        return outcome;
                    }
                    Err(f) => {
                        if is_hedge && !matches!(f, Failure::Cancelled) {
                            // The hedge itself failed: both candidates were tried.
                            moved_on = 2;
                        }
                        record(log, idx, Some(f.clone()), (seq, at), is_hedge);
                        if !matches!(f, Failure::Cancelled) {
                            failed = Some(f);
                        }
                    }
                }
            }
            let Some(f) = failed else { break };
            if !f.triggers(&plan.fallback_on) {
                // The plan does not allow moving on after this failure.
                return exhausted(matches!(f, Failure::Timeout(_)), false);
            }
            let retry_after = match &f {
                Failure::Status { retry_after_ms, .. } => *retry_after_ms,
                _ => None,
            };
            // A candidate that cannot be called as configured is skipped, never retried.
            let retryable = !matches!(f, Failure::Config(_) | Failure::Untranslatable(_));
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
    exhausted(
        matches!(last_failure, Some(Failure::Timeout(_))) || lp.remaining() == 0,
        false,
    )
}

/// Sends candidate `i`; if its response headers have not arrived after `after_ms`, sends
/// `i + 1` too. Whichever gives headers first is kept and the other request is dropped, which
/// cancels it (recorded as `Cancelled`). Only the wait for headers is raced: reading a body
/// is never hedged. The winner comes last in the list.
async fn hedged<T: Transport>(
    lp: &Loop<'_, T>,
    build: &impl Fn(&Candidate, u32) -> Result<OutboundRequest, Failure>,
    cands: &[Candidate<'_>],
    i: usize,
    after_ms: u64,
    now: u64,
    log: &Log,
) -> Vec<Raced<T::Body>> {
    let (s1, a1) = (lp.begin(), now);
    log.fly(i, s1, a1, false);
    let first = lp.send_built(build, &cands[i], s1, a1).fuse();
    let timer = lp.t.sleep(after_ms).fuse();
    futures::pin_mut!(first, timer);
    match future::select(first, timer).await {
        Either::Left((sent, _)) => vec![(i, (s1, a1, sent), false)],
        Either::Right(((), first)) => {
            let (s2, a2) = (lp.begin(), lp.t.now_ms());
            log.fly(i + 1, s2, a2, true);
            let second = lp.send_built(build, &cands[i + 1], s2, a2).fuse();
            futures::pin_mut!(second);
            let one = |r| (i, (s1, a1, r), false);
            let two = |r| (i + 1, (s2, a2, r), true);
            match future::select(first, second).await {
                Either::Left((Ok(r), _)) => vec![two(Err(Failure::Cancelled)), one(Ok(r))],
                Either::Right((Ok(r), _)) => vec![one(Err(Failure::Cancelled)), two(Ok(r))],
                Either::Left((Err(f), second)) => vec![one(Err(f)), two(second.await)],
                Either::Right((Err(f), first)) => match first.await {
                    Ok(r) => vec![two(Err(f)), one(Ok(r))],
                    Err(e) => vec![one(Err(e)), two(Err(f))],
                },
            }
        }
    }
}
