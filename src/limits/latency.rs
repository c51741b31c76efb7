//! Latency by measurement: each node records the time to the first byte of every provider that
//! answers, per edge region, as a decayed average in one key of the shared store, and
//! `sort = "latency"` orders by it once a provider has enough samples (the policy's
//! `latency_ms` before that). Read once per request and written once after it, and only where a
//! latency sort applies. Written with a plain `set` (read, update, write): two nodes updating
//! at once may lose one sample, never the ordering's determinism for a given state.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::PREFIX;

/// Samples a provider needs before its measurement replaces the policy's prior.
pub const MIN_SAMPLES: u64 = 5;

/// The weight of a new sample in the average.
const ALPHA: f64 = 0.2;

/// The key for an edge region's measurements.
pub fn key(region: Option<&str>) -> String {
    format!("{PREFIX}:latency:{}", region.unwrap_or("-"))
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Decayed average time to the first byte, ms.
    pub ms: f64,
    /// Samples seen.
    pub n: u64,
}

/// Every provider's measurement from one edge region.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Measured(pub BTreeMap<String, Entry>);

impl Measured {
    pub fn parse(bytes: Option<&[u8]>) -> Measured {
        bytes
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or_default()
    }

    /// The providers measured often enough to be trusted, rounded to whole milliseconds.
    pub fn usable(&self) -> Vec<(String, u32)> {
        self.0
            .iter()
            .filter(|(_, e)| e.n >= MIN_SAMPLES)
            .map(|(p, e)| {
                (
                    p.clone(),
                    e.ms.round().clamp(0.0, f64::from(u32::MAX)) as u32,
                )
            })
            .collect()
    }

    pub fn record(&mut self, provider: &str, ms: u64) {
        let sample = ms as f64;
        self.0
            .entry(provider.to_string())
            .and_modify(|e| {
                e.ms = e.ms * (1.0 - ALPHA) + sample * ALPHA;
                e.n = e.n.saturating_add(1);
            })
            .or_insert(Entry { ms: sample, n: 1 });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_measurement_counts_after_enough_samples_and_follows_the_provider() {
        let mut m = Measured::default();
        for _ in 0..MIN_SAMPLES - 1 {
            m.record("a", 100);
        }
        assert!(m.usable().is_empty(), "not trusted yet");
        m.record("a", 100);
        assert_eq!(m.usable(), [("a".to_string(), 100)]);
        // It moves towards new samples by a fifth of the gap each time.
        m.record("a", 600);
        assert_eq!(m.usable(), [("a".to_string(), 200)]);
        let again = Measured::parse(Some(&serde_json::to_vec(&m).unwrap()));
        assert_eq!(again, m);
        assert_eq!(Measured::parse(Some(b"garbage")), Measured::default());
    }
}
