//! Spend and rate limits, kept in the platform's key-value store so every node counts against
//! the same numbers.
//!
//! A request that some limit applies to **reserves** the most it can cost before its first
//! attempt: one atomic `increment` per counter (requests, tokens, dollars per calendar window,
//! requests in flight). A counter that goes over its limit is given back and the request is
//! refused with a 429 that names the limit. After the answer (whole or streamed, whichever
//! candidate served it, hedges and fallbacks included) the reservation is **settled** to what
//! the provider reported: one `increment` by the difference per counter.
//!
//! Why the sum never goes over: every reservation is an upper bound of what its request can
//! cost (its output is capped by `max_tokens`, which Meridian sets when the client does not;
//! its input is counted as one token per byte of the body, which no byte-level tokenizer
//! exceeds, plus a fixed bound per image, audio or file part), and a reservation that would go
//! over is never kept. So with a store whose `increment` is atomic (Redis, the SQLite file),
//! the settled total of a window is at most its limit, across any number of nodes.
//!
//! A lost reply: an `increment` that fails may or may not have been applied, so it is never
//! retried. A reservation whose settlement could not be applied stays counted in full (the
//! counter is high, never low), and the log line says so (`settled: "kept"`). Each request
//! settles once: [`Audit::settle`] settles a hold that has no settlement yet.
//!
//! Pure except for the [`Store`] calls; the adapters provide the store (`wasi:keyvalue`).

pub mod health;
pub mod latency;
mod window;

#[cfg(test)]
mod tests;

pub use crate::calendar::{civil_from_days, days_from_civil, rfc3339};
pub use window::{window_bounds, CONCURRENCY_SLOT_S};

pub use futures::future::LocalBoxFuture;
use serde::Serialize;

use crate::policy::{LimitPer, Limits, Metric, Policy, Rule, Tenant, WindowLimit};

/// A key-value store with an atomic increment: `wasi:keyvalue/store` and `atomics` in the
/// adapters, a scripted double in tests.
pub trait Store {
    /// Adds `delta` to the integer at `key` (absent: 0) and returns the new value.
    fn increment<'a>(&'a self, key: &'a str, delta: i64)
        -> LocalBoxFuture<'a, Result<i64, String>>;
    fn get<'a>(&'a self, key: &'a str) -> LocalBoxFuture<'a, Result<Option<Vec<u8>>, String>>;
    fn set<'a>(&'a self, key: &'a str, value: Vec<u8>) -> LocalBoxFuture<'a, Result<(), String>>;
}

/// The prefix of every key Meridian writes, with the layout's version.
pub const PREFIX: &str = "meridian:v1";

pub use crate::request::TOKENS_PER_MEDIA_PART;

/// What a request can cost at most, before it is sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Need {
    /// Input tokens, bounded from above (bytes of the body, plus media parts).
    pub input_tokens: u64,
    /// The most output tokens (all completions together).
    pub output_tokens: u64,
    /// The most it can cost at any candidate's prices, in millionths of a dollar.
    pub micro_usd: u64,
    /// How many attempts may be billed at once (2 when hedging may run two).
    pub parallel: u64,
}

impl Need {
    pub fn tokens(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.output_tokens)
            .saturating_mul(self.parallel.max(1))
    }

    pub fn usd(&self) -> u64 {
        self.micro_usd.saturating_mul(self.parallel.max(1))
    }
}

/// Millionths of a dollar for `tokens` at `price` dollars per million tokens, rounded up.
pub fn micro_usd(tokens: u64, price: Option<f64>) -> u64 {
    let p = price.unwrap_or(0.0);
    if !(p.is_finite() && p > 0.0) {
        return 0;
    }
    let v = (tokens as f64 * p).ceil();
    if v >= u64::MAX as f64 {
        u64::MAX
    } else {
        v as u64
    }
}

/// One counter a request is checked against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Counter {
    /// The store key.
    #[serde(skip)]
    pub key: String,
    /// `tenant acme`, `key acme/1a2b3c4d`, `rule browser-cap for tenant web`.
    pub scope: String,
    /// `requests_per_minute`, `usd_per_month`, `concurrent`.
    pub limit: String,
    pub metric: CounterKind,
    pub max: u64,
    /// What this request adds before it is sent.
    pub reserve: u64,
    /// When the window ends (Unix seconds); for `concurrent`, a second from now.
    pub reset_s: u64,
    /// The other key whose value counts too (`concurrent`: the previous slot's requests that
    /// may still be running).
    #[serde(skip)]
    pub also: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CounterKind {
    Requests,
    Tokens,
    Usd,
    Concurrent,
}

impl From<Metric> for CounterKind {
    fn from(m: Metric) -> Self {
        match m {
            Metric::Requests => CounterKind::Requests,
            Metric::Tokens => CounterKind::Tokens,
            Metric::Usd => CounterKind::Usd,
        }
    }
}

/// Who is calling, for counter keys.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub tenant: Option<&'a Tenant>,
    /// The sha256 of the key the caller presented, when it is a tenant's.
    pub key_hash: Option<[u8; 32]>,
}

impl Caller<'_> {
    /// The tenant, or the tenant and its key with `per = "key"`.
    fn scope(&self, per: LimitPer) -> (String, String) {
        match (per, self.tenant, self.key_hash) {
            (LimitPer::Key, Some(t), Some(h)) => {
                let k = hex8(&h);
                (format!("k/{}/{k}", t.id), format!("key {}/{k}", t.id))
            }
            (_, Some(t), _) => (format!("t/{}", t.id), format!("tenant {}", t.id)),
            (_, None, _) => ("anon".into(), "anonymous callers".into()),
        }
    }
}

fn hex8(h: &[u8; 32]) -> String {
    crate::trace::to_hex(&h[..4])
}

/// Every limit that applies to this request: the tenant's own, and those of each matched rule.
pub fn applicable<'p>(
    policy: &'p Policy,
    tenant: Option<&'p Tenant>,
    matched: &[&'p crate::policy::RuleId],
) -> Vec<(Option<&'p Rule>, &'p Limits)> {
    let mut out = Vec::new();
    if let Some(l) = tenant.and_then(|t| t.limits.as_ref()) {
        out.push((None, l));
    }
    // Only rules with limits are looked up by id: a policy without them compares no ids.
    for r in policy.rules.iter() {
        if let Some(l) = &r.limits {
            if matched.contains(&&r.id) {
                out.push((Some(r), l));
            }
        }
    }
    out
}

/// The counters for a request, in a fixed order (so that two requests never wait on each
/// other's reservations in opposite orders), given what it needs and the wall clock.
pub fn counters(
    limits: &[(Option<&Rule>, &Limits)],
    caller: Caller<'_>,
    need: &Need,
    unix_ms: u64,
) -> Vec<Counter> {
    let now_s = unix_ms / 1000;
    let mut out = Vec::new();
    for (rule, l) in limits {
        let (mut key_scope, mut label) = caller.scope(l.per);
        if let Some(r) = rule {
            key_scope = format!("r/{}/{key_scope}", r.id);
            label = format!("rule {} for {label}", r.id);
        }
        for w in l.windows.iter() {
            out.push(window_counter(&key_scope, &label, w, need, now_s));
        }
        if let Some(max) = l.concurrent {
            let slot = now_s / CONCURRENCY_SLOT_S;
            out.push(Counter {
                key: format!("{PREFIX}:{key_scope}:concurrent:{slot}"),
                scope: label.clone(),
                limit: "concurrent".into(),
                metric: CounterKind::Concurrent,
                max,
                reserve: 1,
                reset_s: now_s + 1,
                also: Some(format!(
                    "{PREFIX}:{key_scope}:concurrent:{}",
                    slot.saturating_sub(1)
                )),
            });
        }
    }
    out
}

fn window_counter(scope: &str, label: &str, w: &WindowLimit, need: &Need, now_s: u64) -> Counter {
    let (start, end) = window_bounds(w.window, now_s);
    let reserve = match w.metric {
        Metric::Requests => 1,
        Metric::Tokens => need.tokens(),
        Metric::Usd => need.usd(),
    };
    Counter {
        key: format!(
            "{PREFIX}:{scope}:{}:{}:{start}",
            w.metric.name(),
            w.window.name()
        ),
        scope: label.to_string(),
        limit: w.key(),
        metric: w.metric.into(),
        max: w.max,
        reserve,
        reset_s: end,
        also: None,
    }
}

/// A counter as reserved: its value after this request's reservation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Held {
    #[serde(flatten)]
    pub counter: Counter,
    /// The counter's value once this request's reservation was added.
    pub after: u64,
}

impl Held {
    pub fn remaining(&self) -> u64 {
        self.counter.max.saturating_sub(self.after)
    }
}

/// What a request has reserved; settled once, when the answer is over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hold {
    pub counters: Vec<Held>,
    pub need: Need,
    /// How many attempts the reservation covers: `need.parallel` at first, more as later
    /// attempts are covered before they start ([`extend`]).
    pub covered: u64,
}

/// Whether a provider may bill an attempt that ended this way: it was sent and may have been
/// read (a timeout, a broken or malformed answer, a hedge cancelled after it was sent). A
/// refused connection, an error status, or a request never built costs nothing.
pub fn may_bill(failure: &crate::transport::Failure) -> bool {
    use crate::transport::Failure;
    match failure {
        Failure::Timeout(_)
        | Failure::Malformed(_)
        | Failure::Transport(_)
        | Failure::Cancelled
        | Failure::Stopped => true,
        Failure::Connect(_)
        | Failure::Status { .. }
        | Failure::Config(_)
        | Failure::Untranslatable(_) => false,
    }
}

impl Hold {
    /// The attempts the reservation must cover before `next` more start, given those so far:
    /// every attempt that may be billed, plus the next.
    pub fn needs_cover(&self, attempts: &[crate::transport::Attempt], next: u64) -> u64 {
        let billed = attempts
            .iter()
            .filter(|a| a.failure.as_ref().is_some_and(may_bill))
            .count() as u64;
        billed.saturating_add(next)
    }

    /// Whether any counter grows with each attempt (tokens or dollars).
    pub fn counts_usage(&self) -> bool {
        self.counters
            .iter()
            .any(|h| matches!(h.counter.metric, CounterKind::Tokens | CounterKind::Usd))
    }
}

/// Covers `more` attempts besides those the hold covers: each tokens and dollars counter is
/// reserved one attempt's need more per attempt (one store call each, as [`reserve`]). A counter
/// that would go over its limit refuses the extension, and what it added is given back; the
/// hold is then as it was.
pub async fn extend(store: &dyn Store, hold: &mut Hold, more: u64) -> Result<(), Refusal> {
    let one = Need {
        parallel: 1,
        ..hold.need
    };
    let counters: Vec<Counter> = hold
        .counters
        .iter()
        .filter_map(|h| {
            let per = match h.counter.metric {
                CounterKind::Tokens => one.tokens(),
                CounterKind::Usd => one.usd(),
                CounterKind::Requests | CounterKind::Concurrent => return None,
            };
            Some(Counter {
                reserve: per.saturating_mul(more),
                ..h.counter.clone()
            })
        })
        .collect();
    let added = reserve(store, counters, one).await?;
    for a in added.counters {
        if let Some(h) = hold
            .counters
            .iter_mut()
            .find(|h| h.counter.key == a.counter.key)
        {
            h.counter.reserve = h.counter.reserve.saturating_add(a.counter.reserve);
            h.after = h.after.max(a.after);
        }
    }
    hold.covered = hold.covered.saturating_add(more);
    Ok(())
}

/// Why a request was not let through.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// A counter would go over its limit.
    Exceeded {
        counter: Counter,
        /// What was already used (by others) when this request asked.
        used: u64,
    },
    /// The store could not be reached (or answered with an error).
    Unavailable(String),
}

/// Reserves every counter, in order; on the first that would go over (or fails), gives back
/// what was already reserved and refuses. One store call per counter (two for `concurrent`).
pub async fn reserve(
    store: &dyn Store,
    counters: Vec<Counter>,
    need: Need,
) -> Result<Hold, Refusal> {
    let mut held: Vec<Held> = Vec::with_capacity(counters.len());
    for c in counters {
        let delta = i64::try_from(c.reserve).unwrap_or(i64::MAX);
        let after = match store.increment(&c.key, delta).await {
            Ok(v) => v,
            Err(e) => {
                // Its outcome is unknown: never retried, never given back (the counter may
                // stay high by this request's reservation; never low).
                give_back(store, &held).await;
                return Err(Refusal::Unavailable(e));
            }
        };
        let mut total = u64::try_from(after).unwrap_or(0);
        if let Some(also) = &c.also {
            match store.get(also).await {
                Ok(v) => total = total.saturating_add(parse_count(v.as_deref())),
                Err(e) => {
                    held.push(Held {
                        counter: c,
                        after: total,
                    });
                    give_back(store, &held).await;
                    return Err(Refusal::Unavailable(e));
                }
            }
        }
        if total > c.max {
            let used = total.saturating_sub(c.reserve);
            held.push(Held {
                counter: c.clone(),
                after: total,
            });
            give_back(store, &held).await;
            return Err(Refusal::Exceeded { counter: c, used });
        }
        held.push(Held {
            counter: c,
            after: total,
        });
    }
    Ok(Hold {
        counters: held,
        covered: need.parallel.max(1),
        need,
    })
}

/// An integer as the store keeps it (Redis and Spin's SQLite store keep the decimal text).
pub fn parse_count(v: Option<&[u8]>) -> u64 {
    v.and_then(|b| std::str::from_utf8(b).ok())
        .and_then(|s| s.trim().parse::<i64>().ok())
        .map_or(0, |n| u64::try_from(n).unwrap_or(0))
}

async fn give_back(store: &dyn Store, held: &[Held]) {
    for h in held.iter().rev() {
        let delta = i64::try_from(h.counter.reserve).unwrap_or(i64::MAX);
        // A failure leaves the counter high: safe, and said in no header because the request
        // is being refused anyway.
        let _ = store.increment(&h.counter.key, -delta).await;
    }
}

/// What the request actually cost, for the settlement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Actual {
    pub tokens: u64,
    pub micro_usd: u64,
}

/// How a hold ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Settlement {
    /// `settled` (counters moved to the real usage), `kept` (usage unknown, or a store call
    /// failed: the reservation stays counted in full), or `released` (nothing was sent).
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual: Option<Actual>,
    /// Store calls that failed while settling (their counters stay at the reservation).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<String>,
}

impl Hold {
    /// Moves each counter from the reservation to `actual` (`None`: the usage is unknown, as
    /// when a stream broke before its usage arrived, and the reservation stays counted); gives
    /// back the in-flight slot. One store call per counter that changes; none is retried.
    pub async fn settle(&self, store: &dyn Store, actual: Option<Actual>) -> Settlement {
        let mut failed = Vec::new();
        let mut kept = actual.is_none();
        for h in &self.counters {
            let c = &h.counter;
            let delta: i64 = match (c.metric, actual) {
                (CounterKind::Requests, _) => 0,
                (CounterKind::Concurrent, _) => -1,
                (_, None) => 0,
                (CounterKind::Tokens, Some(a)) => signed(a.tokens) - signed(c.reserve),
                (CounterKind::Usd, Some(a)) => signed(a.micro_usd) - signed(c.reserve),
            };
            if delta == 0 {
                continue;
            }
            if let Err(e) = store.increment(&c.key, delta).await {
                kept = true;
                failed.push(format!("{}: {e}", c.limit));
            }
        }
        Settlement {
            state: if kept { "kept" } else { "settled" },
            actual,
            failed,
        }
    }
}

/// A request's in-flight counts, kept alive while it runs: each is moved into the current slot
/// when a new slot begins (one increment there, then one decrement of the old slot, so a check
/// between them counts it twice, never zero times). Taken from a [`Hold`] and given back to it,
/// so the settlement releases the slot the count is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Each in-flight counter: its position in the hold, its key without the slot, its slot.
    slots: Vec<(usize, String, u64)>,
}

impl Lease {
    /// When the next slot begins (Unix milliseconds), a little after its boundary.
    pub fn next_renewal_ms(&self, unix_ms: u64) -> u64 {
        let slot_ms = CONCURRENCY_SLOT_S * 1000;
        (unix_ms / slot_ms + 1) * slot_ms + 50
    }

    /// Moves every count into the slot of `now_s` (store errors leave a count where it was: it
    /// then stops counting early, which errs towards admitting; the reservation's give-back
    /// does the same).
    pub async fn renew(&mut self, store: &dyn Store, now_s: u64) {
        let slot = now_s / CONCURRENCY_SLOT_S;
        for (_, prefix, at) in &mut self.slots {
            if *at >= slot {
                continue;
            }
            if store.increment(&format!("{prefix}{slot}"), 1).await.is_ok() {
                let _ = store.increment(&format!("{prefix}{at}"), -1).await;
                *at = slot;
            }
        }
    }
}

impl Hold {
    /// The in-flight counts this hold keeps, if any.
    pub fn lease(&self) -> Option<Lease> {
        let slots: Vec<(usize, String, u64)> = self
            .counters
            .iter()
            .enumerate()
            .filter(|(_, h)| h.counter.metric == CounterKind::Concurrent)
            .filter_map(|(i, h)| {
                let (prefix, slot) = h.counter.key.rsplit_once(':')?;
                Some((i, format!("{prefix}:"), slot.parse().ok()?))
            })
            .collect();
        (!slots.is_empty()).then_some(Lease { slots })
    }

    /// Takes back a lease: each in-flight count is where the lease last moved it.
    pub fn end_lease(&mut self, lease: Lease) {
        for (i, prefix, slot) in lease.slots {
            if let Some(h) = self.counters.get_mut(i) {
                h.counter.key = format!("{prefix}{slot}");
            }
        }
    }
}

fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The rate-limit headers for the caller: for each kind counted (requests, tokens, dollars),
/// the counter with the least left, in the `x-ratelimit-*` shapes OpenAI's SDKs read (reset as
/// a duration, `6m0s`) or Anthropic's `anthropic-ratelimit-*` (reset as an RFC 3339 time).
pub fn headers(held: &[Held], now_s: u64, anthropic: bool) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (kind, name) in [
        (CounterKind::Requests, "requests"),
        (CounterKind::Tokens, "tokens"),
        (CounterKind::Usd, "usd"),
    ] {
        let Some(h) = held
            .iter()
            .filter(|h| h.counter.metric == kind)
            .min_by_key(|h| h.remaining())
        else {
            continue;
        };
        let (limit, remaining) = match kind {
            CounterKind::Usd => (
                crate::policy::limits::micro_usd_display(h.counter.max),
                crate::policy::limits::micro_usd_display(h.remaining()),
            ),
            _ => (h.counter.max.to_string(), h.remaining().to_string()),
        };
        let reset_in = h.counter.reset_s.saturating_sub(now_s);
        if anthropic {
            out.push((format!("anthropic-ratelimit-{name}-limit"), limit));
            out.push((format!("anthropic-ratelimit-{name}-remaining"), remaining));
            out.push((
                format!("anthropic-ratelimit-{name}-reset"),
                rfc3339(h.counter.reset_s),
            ));
        } else {
            out.push((format!("x-ratelimit-limit-{name}"), limit));
            out.push((format!("x-ratelimit-remaining-{name}"), remaining));
            out.push((format!("x-ratelimit-reset-{name}"), duration(reset_in)));
        }
    }
    out
}

/// Seconds as OpenAI writes a reset: `45s`, `6m0s`, `2h3m4s`.
pub fn duration(s: u64) -> String {
    let (h, m, s) = (s / 3600, (s % 3600) / 60, s % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

/// The `x-meridian-limits` audit header: for each counter, what this request reserved and
/// what is left (`tenant rich usd_per_day reserved $0.0021, $0.0079 left`).
pub fn audit_header(hold: &Hold) -> String {
    let amount = |kind: CounterKind, n: u64| match kind {
        CounterKind::Usd => format!("${}", crate::policy::limits::micro_usd_display(n)),
        _ => n.to_string(),
    };
    hold.counters
        .iter()
        .map(|h| {
            let c = &h.counter;
            format!(
                "{} {} reserved {}, {} left",
                c.scope,
                c.limit,
                amount(c.metric, c.reserve),
                amount(c.metric, h.remaining())
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// A candidate's prices, for the reservation and for billing attempts that did not answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Priced {
    pub provider: String,
    /// The dearest price an input token can have here (plain, cache write or cache read).
    pub input: Option<f64>,
    pub output: Option<f64>,
}

impl Priced {
    pub fn cost(&self, input_tokens: u64, output_tokens: u64) -> u64 {
        micro_usd(input_tokens, self.input).saturating_add(micro_usd(output_tokens, self.output))
    }
}

/// What a request needs reserved, given its body's size, its media parts, its output bound and
/// the candidates it may go to.
pub fn need(
    body_bytes: usize,
    media: u64,
    output: u64,
    candidates: &[Priced],
    hedging: bool,
) -> Need {
    let input_tokens =
        (body_bytes as u64).saturating_add(media.saturating_mul(TOKENS_PER_MEDIA_PART));
    Need {
        input_tokens,
        output_tokens: output,
        micro_usd: dearest(candidates, input_tokens, output),
        parallel: if hedging { 2 } else { 1 },
    }
}

/// What the dearest candidate charges for these tokens.
fn dearest(candidates: &[Priced], input_tokens: u64, output: u64) -> u64 {
    candidates
        .iter()
        .map(|c| c.cost(input_tokens, output))
        .max()
        .unwrap_or(0)
}

/// A need whose input is at least `input_tokens` (input the body does not show, bounded by the
/// model's context window), priced again at the dearest candidate.
pub fn need_at_least(need: Need, input_tokens: u64, output: u64, candidates: &[Priced]) -> Need {
    if input_tokens <= need.input_tokens {
        return need;
    }
    Need {
        input_tokens,
        micro_usd: dearest(candidates, input_tokens, output),
        ..need
    }
}

/// The limits part of a request's audit record.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Audit {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold: Option<Hold>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settlement: Option<Settlement>,
    /// Served without counting: the store could not be reached and the policy fails open for
    /// this caller.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uncounted: Option<String>,
    /// The limit that refused the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<Counter>,
    /// Refused because the store could not be reached and the policy fails closed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
    /// Why no further attempt started: the reservation could not be extended to cover it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    #[serde(skip)]
    pub priced: Vec<Priced>,
    /// Rate-limit headers for the caller (Meridian's own limits).
    #[serde(skip)]
    pub headers: Vec<(String, String)>,
}

impl Audit {
    /// The `x-meridian-limits` header.
    pub fn header(&self) -> Option<String> {
        if let Some(c) = &self.refused {
            return Some(format!("refused by {} {}", c.scope, c.limit));
        }
        if let Some(u) = &self.uncounted {
            return Some(format!("not counted: {u}"));
        }
        if self.unavailable.is_some() {
            return Some("refused: the key-value store could not be reached (fail closed)".into());
        }
        self.hold.as_ref().map(audit_header)
    }
}

impl Audit {
    /// Settles the hold, once: a second call (or a request that held nothing) does nothing.
    pub async fn settle(&mut self, store: Option<&dyn Store>, actual: Option<Actual>) {
        let (Some(hold), None) = (&self.hold, &self.settlement) else {
            return;
        };
        self.settlement = Some(match store {
            Some(store) => hold.settle(store, actual).await,
            None => Settlement {
                state: "kept",
                actual,
                failed: vec!["no key-value store".into()],
            },
        });
    }

    /// Billed for attempts that may have been billed without answering ([`may_bill`]: a
    /// cancelled hedge, a timeout, a broken or malformed answer): the provider may have read
    /// the prompt and generated the whole answer, so each is counted at the attempt's bound
    /// (input and output) and its provider's price. The reservation covered each before it
    /// started, so this never takes the counters past it.
    pub fn unanswered(&self, attempts: &[crate::transport::Attempt]) -> Actual {
        let (input, output) = self
            .hold
            .as_ref()
            .map_or((0, 0), |h| (h.need.input_tokens, h.need.output_tokens));
        let mut out = Actual {
            tokens: 0,
            micro_usd: 0,
        };
        for a in attempts {
            if a.failure.as_ref().is_some_and(may_bill) {
                out.tokens = out.tokens.saturating_add(input.saturating_add(output));
                let price = self.priced.iter().find(|p| p.provider == a.provider);
                out.micro_usd = out
                    .micro_usd
                    .saturating_add(price.map_or(0, |p| p.cost(input, output)));
            }
        }
        out
    }
}

/// What `usage` costs at `p`, in millionths of a dollar, each part rounded up (the same split as
/// [`crate::usage::Usage::cost`], in integers so that a settled counter is exact).
pub fn cost_micro(u: &crate::usage::Usage, p: crate::usage::Prices) -> u64 {
    let input = p.input;
    let cached = u.cached_tokens.min(u.prompt_tokens);
    let written = u.cache_write_tokens.min(u.prompt_tokens - cached);
    let plain = u.prompt_tokens - cached - written;
    micro_usd(plain, input)
        .saturating_add(micro_usd(cached, p.cache_read.or(input)))
        .saturating_add(micro_usd(written, p.cache_write.or(input)))
        .saturating_add(micro_usd(u.completion_tokens, p.output))
}
