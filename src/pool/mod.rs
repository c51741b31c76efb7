//! Choosing a pool's replica (`[providers.pool]`, docs/pools.md): pure, from the replicas the
//! constraints allow, the prompt's prefix key and the pool's load summary.
//!
//! - `prefix`: rendezvous (highest random weight) hashing of the prefix key over the replicas'
//!   names gives every prompt its own order of replicas; a replica joining or leaving moves
//!   only the prompts whose first choice it is or becomes. Bounded loads (Mirrokni, Thorup and
//!   Zadimoghaddam, 2018): the first replica in that order whose load, with this request, stays
//!   within `load_bound` times the pool's mean serves; the rest follow in the same order.
//! - `least_load`: fewest waiting requests, then least KV-cache use, then fewest running; ties
//!   in the request's own rendezvous order.
//!
//! A replica with `max_queue` or more waiting requests takes no new one, and one the summary
//! marks down is skipped; a summary older than `stale_after_s` is ignored (the pool is then
//! unmeasured: `prefix` follows the hash alone, `least_load` the request's own order).
//!
//! The summary is one value in the shared store ([`KEY`]) that `meridian pool-scrape` writes:
//! one read per request that has a pool among its candidates.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::policy::{Balance, Pool};
pub use crate::request::prefix::PrefixHasher;

#[cfg(test)]
mod tests;

/// The one key of every pool's load summary.
pub const KEY: &str = "meridian:v1:pools";

/// The key of Meridian's own count of requests in flight at a replica of a pool whose engine
/// exposes no metrics (`engine = "none"`), in the slot of `unix_s` (slots of
/// [`crate::limits::CONCURRENCY_SLOT_S`], as in-flight limits keep them: a count a crashed
/// instance never gave back leaves with its slot). `meridian pool-scrape` sums the current and
/// the previous slot into the replica's `running`.
pub fn inflight_key(provider: &str, replica: &str, unix_s: u64) -> String {
    let slot = unix_s / crate::limits::CONCURRENCY_SLOT_S;
    format!("{KEY}:inflight:{provider}@{replica}:{slot}")
}

/// What an answer's load report says: `TEXT named_metrics.num_requests_waiting=2.0,
/// named_metrics.kv_cache_usage_perc=0.4` (ORCA's text form, as vLLM writes it). `None` when
/// it is not that form or names neither figure.
pub fn parse_load_report(value: &str) -> Option<(Option<u32>, Option<f64>)> {
    let rest = value.trim().strip_prefix("TEXT")?;
    let (mut waiting, mut kv) = (None, None);
    for pair in rest.split(',') {
        let Some((name, v)) = pair.trim().split_once('=') else {
            continue;
        };
        let Ok(v) = v.trim().parse::<f64>() else {
            continue;
        };
        if !v.is_finite() || v < 0.0 {
            continue;
        }
        match name.trim().strip_prefix("named_metrics.") {
            Some("num_requests_waiting") => {
                waiting = Some(v.round().min(f64::from(u32::MAX)) as u32)
            }
            Some("kv_cache_usage_perc") => kv = Some(v.min(1.0)),
            _ => {}
        }
    }
    (waiting.is_some() || kv.is_some()).then_some((waiting, kv))
}

/// Loads this instance learned from its replicas' answers: `(provider, replica)` → when, waiting,
/// KV use. A WASI 0.3 instance serves many requests and keeps them; a WASI 0.2 instance serves
/// one, and they go with it.
struct Learned {
    at_ms: u64,
    waiting: Option<u32>,
    kv: Option<f64>,
}

thread_local! {
    static LEARNED: std::cell::RefCell<BTreeMap<(String, String), Learned>> =
        const { std::cell::RefCell::new(BTreeMap::new()) };
}

/// Keeps what a replica's answer reported at `at_ms`.
pub fn learn(provider: &str, replica: &str, at_ms: u64, report: (Option<u32>, Option<f64>)) {
    LEARNED.with(|l| {
        let mut l = l.borrow_mut();
        // Bounded: a policy has at most 64 replicas a pool; a changed policy's leave.
        if l.len() >= 4096 {
            l.clear();
        }
        l.insert(
            (provider.to_string(), replica.to_string()),
            Learned {
                at_ms,
                waiting: report.0,
                kv: report.1,
            },
        );
    });
}

/// Puts into `load` (a pool's fresh summary) what this instance learned from `provider`'s
/// replicas since the summary was measured: their waiting requests and KV use, the running
/// count staying the scraper's. Returns the replicas it changed. A summary that is absent or
/// stale is left alone: what one instance saw of a few replicas is no measure of the pool.
pub fn overlay(
    provider: &str,
    load: &mut PoolLoad,
    now_ms: u64,
    stale_after_s: u32,
) -> Vec<String> {
    if now_ms.saturating_sub(load.at_ms) > u64::from(stale_after_s) * 1000 {
        return Vec::new();
    }
    let mut changed = Vec::new();
    LEARNED.with(|l| {
        for ((p, r), learned) in l.borrow().iter() {
            if p != provider || learned.at_ms <= load.at_ms {
                continue;
            }
            if let Some(entry) = load.replicas.get_mut(r) {
                if let Some(w) = learned.waiting {
                    entry.waiting = w;
                }
                if learned.kv.is_some() {
                    entry.kv = learned.kv;
                }
                changed.push(r.clone());
            }
        }
    });
    changed
}

/// Every pool's load, by provider id: what `meridian pool-scrape` writes.
pub type Summary = BTreeMap<String, PoolLoad>;

/// One pool's load, measured at `at_ms` (Unix milliseconds).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolLoad {
    pub at_ms: u64,
    /// By replica name.
    pub replicas: BTreeMap<String, Load>,
}

/// One replica's load.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Load {
    /// Requests waiting in its queue.
    #[serde(default)]
    pub waiting: u32,
    /// Requests it is running.
    #[serde(default)]
    pub running: u32,
    /// The share of its KV cache in use, 0 to 1, where the engine says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv: Option<f64>,
    /// Whether it answered its last scrape.
    #[serde(default = "yes")]
    pub healthy: bool,
}

fn yes() -> bool {
    true
}

impl Load {
    fn total(&self) -> u64 {
        u64::from(self.waiting) + u64::from(self.running)
    }
}

/// Reads the summary; an absent or unreadable value is no summary (every pool unmeasured).
pub fn parse(bytes: Option<&[u8]>) -> Summary {
    bytes
        .and_then(|b| serde_json::from_slice(b).ok())
        .unwrap_or_default()
}

/// How far the load that chose a replica can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measured {
    /// Measured `age_ms` ago, within `stale_after_s`.
    Fresh { age_ms: u64 },
    /// Measured `age_ms` ago, too long: ignored.
    Stale { age_ms: u64 },
    /// No summary for this pool.
    Missing,
}

impl Measured {
    /// For the audit: `fresh 1.2s`, `stale 14s (ignored)`, `unmeasured`.
    pub fn describe(&self) -> String {
        match *self {
            Measured::Fresh { age_ms } => format!("fresh {:.1}s", age_ms as f64 / 1000.0),
            Measured::Stale { age_ms } => {
                format!("stale {}s (ignored)", age_ms / 1000)
            }
            Measured::Missing => "unmeasured".to_string(),
        }
    }
}

/// Why the first replica of a choice comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The prompt's own replica (first in its rendezvous order).
    Prefix,
    /// The prompt's own replica was over its bound: the next in its order within it.
    Spilled { past: usize },
    /// The least loaded.
    LeastLoad,
}

/// A pool's replicas in the order to try them, and those left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// Positions in `pool.replicas`, first to try first.
    pub order: Vec<usize>,
    /// Allowed replicas with `max_queue` or more waiting.
    pub queued: Vec<usize>,
    /// Allowed replicas the summary says are down.
    pub down: Vec<usize>,
    pub why: Why,
    pub measured: Measured,
}

impl Choice {
    /// For the audit header and the log: `prefix`, `prefix, spilled past 1`, `least_load`.
    pub fn describe(&self) -> String {
        match self.why {
            Why::Prefix => "prefix".to_string(),
            Why::Spilled { past } => format!("prefix, spilled past {past} over its bound"),
            Why::LeastLoad => "least_load".to_string(),
        }
    }
}

/// splitmix64's finaliser: a well-mixed 64-bit value from another.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A replica's rendezvous score for `key`: the highest goes first.
pub fn score(key: u64, replica: &str) -> u64 {
    mix(key ^ xxhash_rust::xxh3::xxh3_64(replica.as_bytes()))
}

/// Chooses the order of `pool`'s replicas in `allowed` (a mask) for a request whose prefix key
/// is `key`, from `load` (this pool's entry in the summary, if any) at `now_ms`.
pub fn choose(pool: &Pool, allowed: u64, key: u64, load: Option<&PoolLoad>, now_ms: u64) -> Choice {
    let measured = match load {
        None => Measured::Missing,
        Some(l) => {
            let age_ms = now_ms.saturating_sub(l.at_ms);
            if age_ms > u64::from(pool.stale_after_s) * 1000 {
                Measured::Stale { age_ms }
            } else {
                Measured::Fresh { age_ms }
            }
        }
    };
    let fresh = match measured {
        Measured::Fresh { .. } => load,
        _ => None,
    };
    let load_of = |i: usize| -> Option<Load> {
        fresh.and_then(|l| l.replicas.get(pool.replicas[i].name.as_ref()).copied())
    };
    let mut ranked: Vec<(usize, u64)> = Vec::with_capacity(pool.replicas.len());
    let mut queued = Vec::new();
    let mut down = Vec::new();
    for (i, r) in pool.replicas.iter().enumerate() {
        if i >= 64 || allowed & (1 << i) == 0 {
            continue;
        }
        match load_of(i) {
            Some(l) if !l.healthy => down.push(i),
            Some(l) if pool.max_queue.is_some_and(|m| l.waiting >= m) => queued.push(i),
            _ => ranked.push((i, score(key, &r.name))),
        }
    }
    // Rendezvous order: highest score first (names are unique, so are their scores but for a
    // 2^-64 chance; the position breaks that tie).
    ranked.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut order: Vec<usize> = ranked.iter().map(|(i, _)| *i).collect();
    let why = match pool.balance {
        Balance::Prefix => {
            let total: u64 = order
                .iter()
                .map(|&i| load_of(i).map_or(0, |l| l.total()))
                .sum();
            let n = order.len().max(1) as f64;
            // With this request: each replica may carry up to `load_bound` times the mean.
            let bound = (pool.load_bound * (total as f64 + 1.0) / n).ceil() as u64;
            let first = order
                .iter()
                .position(|&i| load_of(i).map_or(0, |l| l.total()) < bound.max(1))
                .unwrap_or(0);
            if first > 0 {
                let chosen = order.remove(first);
                order.insert(0, chosen);
                Why::Spilled { past: first }
            } else {
                Why::Prefix
            }
        }
        Balance::LeastLoad => {
            // The less loaded of the first two in the request's own rendezvous order (its key
            // is the request's seed), then the rest by load: with a summary up to a scrape
            // interval old, sending every request to the one least loaded replica sends them
            // all to the same one until the next scrape; two random choices stay balanced on
            // old information (Mitzenmacher, "How Useful Is Old Information?", 2000).
            let rank = |i: usize| {
                load_of(i).map_or((0, 0, 0), |l| {
                    (
                        l.waiting,
                        l.kv.map_or(0, |k| (k.clamp(0.0, 1.0) * 1000.0) as u32),
                        l.running,
                    )
                })
            };
            if order.len() > 1 && rank(order[1]) < rank(order[0]) {
                order.swap(0, 1);
            }
            // A stable sort: equal loads keep the request's rendezvous order.
            if let Some(rest) = order.get_mut(1..) {
                rest.sort_by_key(|&i| rank(i));
            }
            Why::LeastLoad
        }
    };
    Choice {
        order,
        queued,
        down,
        why,
        measured,
    }
}

/// One pool's choice among a decision's candidates.
pub struct Chosen<'p> {
    pub provider: &'p crate::policy::ProviderId,
    pub pool: &'p Pool,
    pub choice: Choice,
}

/// Replaces each pool's candidate with its replicas in the order [`choose`] gives (each
/// processing data where that replica is, and keeping it there unless its provider states
/// `storage`); returns every pool's choice, in candidate order. A pool whose choice is empty
/// (every allowed replica queued or down) leaves no candidate.
pub fn expand<'p>(
    policy: &'p crate::policy::Policy,
    candidates: Vec<crate::decide::Candidate<'p>>,
    facts: &crate::facts::RequestFacts,
    summary: &Summary,
    now_ms: u64,
) -> (Vec<crate::decide::Candidate<'p>>, Vec<Chosen<'p>>) {
    let mut out = Vec::with_capacity(candidates.len() + 2);
    let mut chosen = Vec::new();
    for c in candidates {
        let p = &policy.providers[c.index];
        let Some(pool) = &p.pool else {
            out.push(c);
            continue;
        };
        let key = facts.prefix_key(pool.prefix_bytes);
        let choice = choose(pool, c.replicas, key, summary.get(p.id.as_str()), now_ms);
        for &i in &choice.order {
            let r = &pool.replicas[i];
            let mut each = c.clone();
            each.replica = Some((r.name.as_ref(), i));
            each.location = r.location.as_ref();
            if p.storage.is_none() {
                each.storage = r.location.as_ref();
            }
            out.push(each);
        }
        chosen.push(Chosen {
            provider: &p.id,
            pool,
            choice,
        });
    }
    (out, chosen)
}

/// Where a candidate may process the request's data, as the policy writes it: a pool's the
/// places of the replicas its constraints allow (each once, in catalog order: `DE, FR`); any
/// other provider's its `location`. What the log keeps of a decision's first choice, so that
/// `meridian replay` sees a change to the replicas a request may reach.
pub fn places(policy: &crate::policy::Policy, c: &crate::decide::Candidate<'_>) -> String {
    let Some(pool) = policy.providers.get(c.index).and_then(|p| p.pool.as_ref()) else {
        return c.location.to_string();
    };
    if let Some((_, i)) = c.replica {
        return pool
            .replicas
            .get(i)
            .map_or_else(|| c.location.to_string(), |r| r.location.to_string());
    }
    pool.places(c.replicas)
}

/// Replica names, for the audit.
pub fn names(pool: &Pool, at: &[usize]) -> Vec<String> {
    at.iter()
        .filter_map(|&i| pool.replicas.get(i))
        .map(|r| r.name.to_string())
        .collect()
}
