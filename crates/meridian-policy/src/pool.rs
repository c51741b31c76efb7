//! Self-hosted pools (`[providers.pool]`): a provider served by several replicas of one engine,
//! each with its own URL and, where replicas sit in different places, its own location, so that
//! residency applies per replica. Which replica serves a request is chosen per request from a
//! load summary in the shared store (`meridian pool-scrape` keeps it fresh) and, under
//! `balance = "prefix"`, from a hash of the prompt's leading bytes, so requests that share a
//! system prompt or a conversation land on the replica whose KV cache holds it.
//!
//! Like the evidence fields, a provider's pool is left out of serde's form of the model and
//! written after the rest in the compiled form ([`Pools`]), so a form compiled before pools
//! existed still reads.

use serde::{Deserialize, Serialize};

use crate::model::{BaseUrl, List, Text};
use crate::{Country, CountrySet, Policy};

/// How a pool picks its replica.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Balance {
    /// Rendezvous (highest random weight) hashing of the prompt's leading bytes over the
    /// replicas, with bounded loads: the prompt's own replica unless it is over its bound, then
    /// the next in the prompt's order.
    #[default]
    Prefix,
    /// The replica with the fewest waiting requests, then the least KV-cache use, then the
    /// fewest running requests.
    LeastLoad,
}

impl Balance {
    pub const NAMES: &'static [&'static str] = &["prefix", "least_load"];

    pub fn name(self) -> &'static str {
        match self {
            Balance::Prefix => "prefix",
            Balance::LeastLoad => "least_load",
        }
    }

    pub fn parse(s: &str) -> Option<Balance> {
        match s {
            "prefix" => Some(Balance::Prefix),
            "least_load" => Some(Balance::LeastLoad),
            _ => None,
        }
    }
}

/// What the scraper reads from a replica's metrics endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Engine {
    /// vLLM: `vllm:num_requests_waiting`, `vllm:num_requests_running`, `vllm:kv_cache_usage_perc`.
    #[default]
    Vllm,
    /// SGLang: `sglang:num_queue_reqs`, `sglang:num_running_reqs`, `sglang:token_usage`.
    Sglang,
    /// llama.cpp server (`--metrics`): `llamacpp:requests_deferred`, `llamacpp:requests_processing`.
    Llamacpp,
    /// No metrics (Ollama): the scraper only checks that the replica answers.
    None,
}

impl Engine {
    pub const NAMES: &'static [&'static str] = &["vllm", "sglang", "llamacpp", "none"];

    pub fn name(self) -> &'static str {
        match self {
            Engine::Vllm => "vllm",
            Engine::Sglang => "sglang",
            Engine::Llamacpp => "llamacpp",
            Engine::None => "none",
        }
    }

    pub fn parse(s: &str) -> Option<Engine> {
        match s {
            "vllm" => Some(Engine::Vllm),
            "sglang" => Some(Engine::Sglang),
            "llamacpp" => Some(Engine::Llamacpp),
            "none" => Some(Engine::None),
            _ => None,
        }
    }
}

/// One replica of a pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Replica {
    /// Unique within its pool; what the audit, the log and the load summary call it.
    pub name: Text,
    pub base_url: BaseUrl,
    /// Where the scraper reads its load (`metrics_url`; default: `base_url`'s origin and
    /// `/metrics`, or `/health` for `engine = "none"`).
    pub metrics_url: BaseUrl,
    /// Where it processes data, as written (its own `location`, else the provider's).
    pub location: Text,
    pub countries: CountrySet,
    pub single_country: Option<Country>,
}

impl Replica {
    /// Whether it processes data only within `allowed`.
    pub fn within(&self, allowed: &CountrySet) -> bool {
        match self.single_country {
            Some(c) => allowed.contains(c),
            None => self.countries.is_nonempty_subset(allowed),
        }
    }
}

/// `[providers.pool]`: the replicas and how one is chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pool {
    pub balance: Balance,
    pub engine: Engine,
    pub replicas: List<Replica>,
    /// A replica with this many waiting requests takes no new one (`max_queue`); when every
    /// allowed replica is there, the request goes to the next allowed provider, or is refused
    /// with 503 and `Retry-After`.
    pub max_queue: Option<u32>,
    /// Bounded loads: no replica takes a request while its load is above this factor times the
    /// pool's mean (`load_bound`, above 1; default 1.25).
    pub load_bound: f64,
    /// How many leading bytes of the prompt's text name its prefix (`prefix_bytes`).
    pub prefix_bytes: u32,
    /// A load summary older than this is not trusted (`stale_after_s`).
    pub stale_after_s: u32,
}

impl Pool {
    pub const DEFAULT_LOAD_BOUND: f64 = 1.25;
    pub const DEFAULT_PREFIX_BYTES: u32 = 256;
    pub const DEFAULT_STALE_AFTER_S: u32 = 10;
    /// At most this many replicas: a candidate's allowed replicas are a 64-bit mask.
    pub const MAX_REPLICAS: usize = 64;

    /// Every replica, as a mask.
    pub fn all(&self) -> u64 {
        match self.replicas.len() {
            n if n >= 64 => u64::MAX,
            n => (1u64 << n) - 1,
        }
    }

    /// The replicas in `mask`.
    pub fn in_mask(&self, mask: u64) -> impl Iterator<Item = &Replica> {
        self.replicas
            .iter()
            .enumerate()
            .filter(move |(i, _)| *i < 64 && mask & (1 << i) != 0)
            .map(|(_, r)| r)
    }

    /// Where the replicas in `mask` process data, as written, each place once in catalog order
    /// (`DE, FR`): what the provider's `location` says of all of them, and a decision's first
    /// choice of the allowed ones.
    pub fn places(&self, mask: u64) -> String {
        let mut seen: Vec<&str> = Vec::new();
        for r in self.in_mask(mask) {
            if !seen.contains(&r.location.as_ref()) {
                seen.push(&r.location);
            }
        }
        seen.join(", ")
    }

    /// Every country any replica processes data in.
    pub fn countries(&self) -> CountrySet {
        let mut all = CountrySet::new();
        for r in self.replicas.iter() {
            all.union_with(&r.countries);
        }
        all
    }
}

/// The compiled form's section for pools, in catalog order.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Pools {
    pub providers: Vec<Option<Pool>>,
}

impl Pools {
    pub fn of(policy: &Policy) -> Pools {
        Pools {
            providers: policy.providers.iter().map(|p| p.pool.clone()).collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.providers.iter().all(Option::is_none)
    }

    pub fn restore(self, policy: &mut Policy) -> Result<(), &'static str> {
        if self.providers.len() != policy.providers.len() {
            return Err("its pools section does not match its providers");
        }
        let mut providers = std::mem::take(&mut policy.providers).into_owned();
        for (p, pool) in providers.iter_mut().zip(self.providers) {
            p.pool = pool;
        }
        policy.providers = providers.into();
        Ok(())
    }
}

impl Policy {
    /// The distinct `prefix_bytes` of the policy's pools, ascending: the request's reading
    /// hashes its text's leading bytes up to each.
    pub fn prefix_bounds(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .providers
            .iter()
            .filter_map(|p| p.pool.as_ref())
            .filter(|p| p.balance == Balance::Prefix)
            .map(|p| p.prefix_bytes)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}
