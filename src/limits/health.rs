//! Provider health as shared state (`[settings.health]`): every node counts each provider's
//! failures in the store, per window; a provider that reaches `failures` within `window_s`
//! seconds is written into one cooling map (`provider → until`) that every node reads once per
//! request and skips, with the reason in the audit, until the cool-down ends. An outage then
//! costs each request one store read instead of an attempt and its timeout.
//!
//! The map is written with a plain `set` (read, add, write): two nodes cooling two providers at
//! the same moment may lose one entry, which costs that provider's next requests their attempt
//! until it fails `failures` times again; never a wrong refusal.

use std::collections::BTreeMap;

use super::{Store, PREFIX};
use crate::policy::Health;
use crate::transport::{Attempt, Failure};

/// The one key every node reads: `{"provider": until_unix_s, …}`.
pub fn cooling_key() -> String {
    format!("{PREFIX}:health:cooling")
}

/// The providers cooling down at `now_s`, with when they come back.
pub fn parse(bytes: Option<&[u8]>, now_s: u64) -> BTreeMap<String, u64> {
    let map: BTreeMap<String, u64> = bytes
        .and_then(|b| serde_json::from_slice(b).ok())
        .unwrap_or_default();
    map.into_iter()
        .filter(|(_, until)| *until > now_s)
        .collect()
}

/// Reads the cooling map; a store that cannot be read cools nobody (health only ever skips a
/// provider; it never decides who may be served).
pub async fn cooling(store: &dyn Store, now_s: u64) -> Result<BTreeMap<String, u64>, String> {
    let v = store.get(&cooling_key()).await?;
    Ok(parse(v.as_deref(), now_s))
}

/// A request whose estimated input is at most this many tokens cannot explain a provider's
/// 429 or timeout by its own size: those count towards its cool-down only for such requests. A
/// longer prompt may be rate limited by its tokens per minute, or slow to its first byte, on a
/// provider that is healthy, and one caller's long prompts must not cool a provider for all.
pub const SMALL_REQUEST_TOKENS: u64 = 8_000;

/// What a failed attempt says about the provider's health: nothing (the request, the
/// configuration, a hedge that lost, or a 429 or timeout the request's size explains), the
/// provider as a whole (it could not be reached, or answered garbage), or the model (an error
/// status, a rate limit or a timeout, which a provider has per model).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    None,
    Provider,
    Model,
}

/// The blame for a failure of a request with `input_tokens` estimated.
pub fn blame(f: &Failure, input_tokens: u64) -> Blame {
    let small = input_tokens <= SMALL_REQUEST_TOKENS;
    match f {
        Failure::Connect(_) | Failure::Malformed(_) | Failure::Transport(_) => Blame::Provider,
        Failure::Status { status, .. } if *status >= 500 => Blame::Model,
        Failure::Status { status: 429, .. } | Failure::Timeout(_) if small => Blame::Model,
        Failure::Status { .. }
        | Failure::Timeout(_)
        | Failure::Config(_)
        | Failure::Untranslatable(_)
        | Failure::Cancelled
        | Failure::Stopped => Blame::None,
    }
}

/// What the cooling map names for a model of a provider: `provider/model`.
pub fn model_key(provider: &str, model: &str) -> String {
    format!("{provider}/{model}")
}

/// What the cooling map names for a replica of a pool: `provider@replica`. A replica is one
/// engine: its failures cool it alone, whatever their blame.
pub fn replica_key(provider: &str, replica: &str) -> String {
    format!("{provider}@{replica}")
}

/// Counts this request's failed attempts that the provider caused ([`blame`]); a provider, or
/// a model of one, that reaches the threshold is added to the cooling map. Returns what this
/// request put into cool-down (`provider` or `provider/model`).
pub async fn record(
    store: &dyn Store,
    h: &Health,
    attempts: &[Attempt],
    input_tokens: u64,
    now_s: u64,
) -> Vec<String> {
    let window = now_s / h.window_s;
    let mut cooled = Vec::new();
    for a in attempts {
        let who = match a.failure.as_ref().map(|f| blame(f, input_tokens)) {
            Some(Blame::Provider | Blame::Model) if a.replica.is_some() => {
                replica_key(&a.provider, a.replica.as_deref().unwrap_or_default())
            }
            Some(Blame::Provider) => a.provider.clone(),
            Some(Blame::Model) => model_key(&a.provider, &a.model),
            Some(Blame::None) | None => continue,
        };
        let key = format!("{PREFIX}:health:{who}:fail:{window}");
        if let Ok(n) = store.increment(&key, 1).await {
            if u64::try_from(n).unwrap_or(0) == h.failures && !cooled.contains(&who) {
                cooled.push(who);
            }
        }
    }
    if cooled.is_empty() {
        return cooled;
    }
    let key = cooling_key();
    let mut map = match store.get(&key).await {
        Ok(v) => parse(v.as_deref(), now_s),
        Err(_) => return Vec::new(),
    };
    for p in &cooled {
        map.insert(p.clone(), now_s + h.cooldown_s);
    }
    let Ok(bytes) = crate::json::to_vec(&map) else {
        return Vec::new();
    };
    match store.set(&key, bytes).await {
        Ok(()) => cooled,
        Err(_) => Vec::new(),
    }
}
