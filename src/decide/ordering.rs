//! Ordering the allowed candidates: by price or latency, by weights (deterministic per request
//! id, so a decision can be replayed), and by explicit order lists.

use super::Candidate;
use crate::policy::{ModelEntry, Policy, Sort};

/// A small deterministic generator seeded from the request id (splitmix64).
struct Seeded(u64);

impl Seeded {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Weighted order without replacement; zero weights keep their order at the end.
pub(super) fn weighted_order<'p>(
    items: Vec<Candidate<'p>>,
    weight: impl Fn(&Candidate) -> u32,
    seed: u64,
) -> Vec<Candidate<'p>> {
    let (mut pool, zero): (Vec<Candidate>, Vec<Candidate>) =
        items.into_iter().partition(|c| weight(c) > 0);
    let mut rng = Seeded(seed);
    let mut out = Vec::with_capacity(pool.len() + zero.len());
    while !pool.is_empty() {
        let total: u64 = pool.iter().map(|c| u64::from(weight(c))).sum();
        let mut pick = rng.next() % total;
        let mut idx = 0;
        for (i, c) in pool.iter().enumerate() {
            let w = u64::from(weight(c));
            if pick < w {
                idx = i;
                break;
            }
            pick -= w;
        }
        out.push(pool.remove(idx));
    }
    out.extend(zero);
    out
}

/// An f64 ordered by `total_cmp`, for sort keys.
struct TotalF64(f64);

impl PartialEq for TotalF64 {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o).is_eq()
    }
}

impl Eq for TotalF64 {}

impl PartialOrd for TotalF64 {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

impl Ord for TotalF64 {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0)
    }
}

pub(super) fn sort_by(
    cands: &mut [Candidate],
    sort: Sort,
    policy: &Policy,
    facts: &crate::facts::RequestFacts,
) {
    let measured = &facts.measured_ms;
    match sort {
        Sort::Price => cands.sort_by_cached_key(|c| {
            TotalF64(ModelEntry::blended_price(c.input_price, c.output_price))
        }),
        // Measured from this edge where there are enough samples; the policy's prior elsewhere.
        Sort::Latency => cands.sort_by_key(|c| {
            measured
                .iter()
                .find(|(p, _)| p == c.provider.as_str())
                .map(|(_, ms)| *ms)
                .or(policy.providers[c.index].latency_ms)
                .unwrap_or(u32::MAX)
        }),
        Sort::Weighted => {}
        // From the client's country, else the edge region, to the nearest of the countries the
        // provider processes data in; without either, the order stands (a stable sort).
        Sort::Nearest => {
            use crate::policy::places;
            let origin = places::country(facts.country.as_str())
                .or_else(|| facts.edge_region.as_deref().and_then(places::region));
            let Some(origin) = origin else { return };
            cands.sort_by_cached_key(|c| {
                TotalF64(
                    policy.providers[c.index]
                        .countries
                        .iter()
                        .filter_map(|k| places::country(k.as_str()))
                        .map(|p| places::km(origin, p))
                        .fold(f64::INFINITY, f64::min),
                )
            })
        }
    }
}

/// Moves the named candidates to the front, in the order named; the rest keep their order.
pub(super) fn move_to_front<'a>(cands: &mut [Candidate], order: impl IntoIterator<Item = &'a str>) {
    let mut next = 0;
    for id in order {
        if let Some(pos) = cands[next..].iter().position(|c| c.provider.as_str() == id) {
            cands[next..=next + pos].rotate_right(1);
            next += 1;
        }
    }
}
