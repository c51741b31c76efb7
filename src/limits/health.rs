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

/// Whether a failed attempt says something about the provider's health (not about the
/// request, the configuration or a hedge that lost).
pub fn is_health_failure(f: &Failure) -> bool {
    match f {
        Failure::Connect(_)
        | Failure::Timeout(_)
        | Failure::Malformed(_)
        | Failure::Transport(_) => true,
        Failure::Status { status, .. } => *status >= 500 || *status == 429,
        Failure::Config(_) | Failure::Untranslatable(_) | Failure::Cancelled => false,
    }
}

/// Counts this request's failed attempts; a provider that reaches the threshold is added to the
/// cooling map. Returns the providers this request put into cool-down.
pub async fn record(
    store: &dyn Store,
    h: &Health,
    attempts: &[Attempt],
    now_s: u64,
) -> Vec<String> {
    let window = now_s / h.window_s;
    let mut cooled = Vec::new();
    for a in attempts {
        if !a.failure.as_ref().is_some_and(is_health_failure) {
            continue;
        }
        let key = format!("{PREFIX}:health:{}:fail:{window}", a.provider);
        if let Ok(n) = store.increment(&key, 1).await {
            if u64::try_from(n).unwrap_or(0) == h.failures && !cooled.contains(&a.provider) {
                cooled.push(a.provider.clone());
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
    let Ok(bytes) = serde_json::to_vec(&map) else {
        return Vec::new();
    };
    match store.set(&key, bytes).await {
        Ok(()) => cooled,
        Err(_) => Vec::new(),
    }
}
