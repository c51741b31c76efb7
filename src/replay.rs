//! Logged traffic decided again under another policy: what a policy change does to the
//! requests a deployment really served. Pure: `meridian replay` streams the log through
//! [`Replay::line`] and prints [`Replay::finish`].
//!
//! Each log line of an inference request carries `facts` ([`Inputs`]): what the decision read
//! that the rest of the line does not already say (endpoint, stream, privacy flags, the edge
//! region, size estimates, the `provider` preferences, the values of the headers the policy's
//! rules name, the spread's seed) and the decision's first choice. Never prompt text: personal
//! data is its kinds and counts (the line's `pii`), a conversation key only the seed drawn
//! from it. With the rest of the line (tenant, model, country, edge verification, capabilities)
//! that is the request's facts again, and [`crate::decide::decide`], the component's own
//! decision, says what the new policy does with it.
//!
//! What a replay compares is the decision: the old first choice (as logged) against the new
//! one, or the old refusal against the new. What happened after the decision (a provider that
//! failed and a fallback that answered, Meridian's own limits, providers cooling down) is
//! traffic, not policy, and is not replayed; the cost difference prices each logged usage at
//! the new first choice's catalog prices (or, when the first choice is unchanged and a fallback
//! answered, at that fallback's).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::audit::facts::{header_digest, First, Inputs};
use crate::decide::decide;
use crate::facts::RequestFacts;
use crate::location::{Edge, Location, Source};
use crate::policy::{CapSet, Capability, Country, Policy, PrivacyFlags, TenantId};
use crate::usage::{Prices, Usage};

/// Examples kept per kind of change.
pub const EXAMPLES: usize = 3;

/// The value a logged header stands for under `policy`: the value of a condition on it whose
/// digest matches, else what was logged (a digest matches no value, only presence).
fn header_value(policy: &Policy, name: &str, logged: &str) -> String {
    if !logged.starts_with("sha256:") {
        return logged.to_string(); // a line from before digests
    }
    policy
        .rules
        .iter()
        .flat_map(|r| r.when.headers.iter())
        .filter(|(n, _)| n.as_ref() == name)
        .filter_map(|(_, want)| want.as_deref())
        .find(|want| header_digest(want) == logged)
        .map_or_else(|| logged.to_string(), str::to_string)
}

/// Personal data as a log line gives it: kind → count.
#[derive(Debug, Default, Deserialize)]
struct LinePii {
    #[serde(default)]
    found: BTreeMap<String, u32>,
}

/// What a replay reads of a log line.
#[derive(Debug, Deserialize)]
struct Line {
    #[serde(default)]
    request_id: String,
    #[serde(default)]
    status: u16,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    country: Option<String>,
    #[serde(default)]
    edge: Option<Edge>,
    #[serde(default)]
    provider: Option<String>,
    #[serde(default)]
    served_model: Option<String>,
    #[serde(default)]
    error_code: Option<String>,
    #[serde(default)]
    refused_by: Option<String>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    cost_usd: Option<f64>,
    #[serde(default)]
    pii: Option<LinePii>,
    #[serde(default)]
    capabilities: Vec<String>,
    #[serde(default)]
    facts: Option<Inputs>,
}

/// A decision, as a replay compares them.
#[derive(Debug, Clone, PartialEq)]
enum Decided {
    Routed {
        provider: String,
        location: String,
        /// Where the first choice keeps what it retains (`location` when it says nothing else).
        storage: String,
        /// The first choice's model (the new decision's; a log line keeps none for the old).
        model: Option<String>,
        prices: Option<Prices>,
    },
    Refused {
        status: u16,
        code: String,
    },
}

/// Requests of one kind of change, and a few of their ids.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Bucket {
    pub requests: u64,
    pub examples: Vec<String>,
}

impl Bucket {
    fn add(&mut self, id: &str) {
        self.requests += 1;
        if self.examples.len() < EXAMPLES && !id.is_empty() {
            self.examples.push(id.to_string());
        }
    }
}

/// Requests the new policy refuses that the old one routed.
#[derive(Debug, Clone, Serialize)]
pub struct NowRefused {
    pub status: u16,
    pub code: String,
    /// Of them, how many had been answered (the rest failed or were refused after the decision).
    pub served_before: u64,
    #[serde(flatten)]
    pub bucket: Bucket,
}

/// Requests the new policy routes that the old one refused.
#[derive(Debug, Clone, Serialize)]
pub struct NowServed {
    pub was_status: u16,
    pub was_code: String,
    /// Where the new policy sends them first.
    pub provider: String,
    #[serde(flatten)]
    pub bucket: Bucket,
}

/// Requests moved from one value to another (provider, jurisdiction, refusal).
#[derive(Debug, Clone, Serialize)]
pub struct Moved {
    pub from: String,
    pub to: String,
    #[serde(flatten)]
    pub bucket: Bucket,
}

/// The cost of the logged usage: as billed under the old policy, and at the new first
/// choice's catalog prices, or an unchanged first choice's fallback's (a request the new policy
/// refuses costs nothing).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Cost {
    pub old_usd: f64,
    pub new_usd: f64,
    /// Requests in both sums: logged usage priced under the old policy, and refused or priced
    /// under the new one.
    pub priced: u64,
    /// Requests with usage left out of both sums: no price for it under one of the policies.
    pub unpriced: u64,
    /// Requests the new policy routes that have no usage in the log (they were refused or
    /// failed): their cost is not known.
    pub no_usage: u64,
}

/// What replaying a log against a policy found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub policy: String,
    /// Lines read.
    pub lines: u64,
    /// Requests decided again.
    pub replayed: u64,
    pub unchanged: u64,
    pub changed: u64,
    /// Lines not decided again, by why.
    pub skipped: BTreeMap<&'static str, u64>,
    pub now_refused: Vec<NowRefused>,
    pub now_served: Vec<NowServed>,
    pub refused_differently: Vec<Moved>,
    /// First choice moved to another provider.
    pub provider_moves: Vec<Moved>,
    /// First choice moved to a provider that processes data elsewhere.
    pub jurisdiction_moves: Vec<Moved>,
    /// First choice moved to a provider that keeps data elsewhere.
    pub storage_moves: Vec<Moved>,
    pub cost: Cost,
    /// Facts the new policy reads that some lines could not give, and what was assumed.
    pub caveats: BTreeMap<&'static str, u64>,
}

/// A replay in progress: one line at a time, bounded memory (sums and a few examples).
pub struct Replay<'p> {
    policy: &'p Policy,
    /// Header names the new policy's rules read.
    header_names: Vec<String>,
    report: Report,
    now_refused: BTreeMap<(u16, String), (u64, Bucket)>,
    now_served: BTreeMap<(u16, String, String), Bucket>,
    refused_differently: BTreeMap<(String, String), Bucket>,
    provider_moves: BTreeMap<(String, String), Bucket>,
    jurisdiction_moves: BTreeMap<(String, String), Bucket>,
    storage_moves: BTreeMap<(String, String), Bucket>,
}

/// Why a line is not decided again.
pub const SKIP_NOT_JSON: &str = "not a Meridian log line (not JSON, or a field of another type)";
pub const SKIP_NO_FACTS: &str =
    "no decision logged (not an inference request, refused before the decision, or logged by a version without `facts`)";
pub const SKIP_UNKNOWN: &str =
    "facts without a first choice or a refusal (not written by this version)";

pub const CAVEAT_PII: &str = "personal data not scanned when logged (taken as none found)";
pub const CAVEAT_HEADERS: &str =
    "a header the new policy's rules read was not logged (taken as not sent)";
pub const CAVEAT_TENANT: &str =
    "tenant not in the new policy: its keys no longer name it (401, or anonymous where the policy allows callers without a key)";

impl<'p> Replay<'p> {
    pub fn new(policy: &'p Policy) -> Replay<'p> {
        let mut header_names: Vec<String> =
            policy.rule_header_names().map(str::to_string).collect();
        header_names.sort();
        header_names.dedup();
        Replay {
            policy,
            header_names,
            report: Report {
                policy: policy.version_label(),
                ..Report::default()
            },
            now_refused: BTreeMap::new(),
            now_served: BTreeMap::new(),
            refused_differently: BTreeMap::new(),
            provider_moves: BTreeMap::new(),
            jurisdiction_moves: BTreeMap::new(),
            storage_moves: BTreeMap::new(),
        }
    }

    fn skip(&mut self, why: &'static str) {
        *self.report.skipped.entry(why).or_default() += 1;
    }

    fn caveat(&mut self, what: &'static str) {
        *self.report.caveats.entry(what).or_default() += 1;
    }

    /// Reads one log line (blank lines are not counted).
    pub fn line(&mut self, text: &str) {
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        self.report.lines += 1;
        let Ok(line) = serde_json::from_str::<Line>(text) else {
            return self.skip(SKIP_NOT_JSON);
        };
        let (Some(inputs), Some(model)) = (&line.facts, &line.model) else {
            return self.skip(SKIP_NO_FACTS);
        };
        let old = if line.refused_by.as_deref() == Some("policy") {
            Decided::Refused {
                status: line.status,
                code: line.error_code.clone().unwrap_or_default(),
            }
        } else if let Some(f) = &inputs.first {
            Decided::Routed {
                provider: f.provider.clone(),
                location: f.location.clone(),
                storage: f.storage.clone().unwrap_or_else(|| f.location.clone()),
                model: None,
                prices: None,
            }
        } else {
            return self.skip(SKIP_UNKNOWN);
        };
        let mut facts = self.facts_of(&line, inputs, model);
        let new = self.decide(&mut facts, inputs);
        self.report.replayed += 1;
        self.cost(&line, &old, &new);
        let id = line.request_id.as_str();
        let changed = match (&old, &new) {
            (
                Decided::Routed {
                    provider: p0,
                    location: l0,
                    storage: s0,
                    ..
                },
                Decided::Routed {
                    provider: p1,
                    location: l1,
                    storage: s1,
                    ..
                },
            ) => {
                if s0 != s1 {
                    self.storage_moves
                        .entry((s0.clone(), s1.clone()))
                        .or_default()
                        .add(id);
                }
                if p0 != p1 {
                    self.provider_moves
                        .entry((p0.clone(), p1.clone()))
                        .or_default()
                        .add(id);
                }
                if l0 != l1 {
                    self.jurisdiction_moves
                        .entry((l0.clone(), l1.clone()))
                        .or_default()
                        .add(id);
                }
                p0 != p1 || l0 != l1 || s0 != s1
            }
            (Decided::Routed { .. }, Decided::Refused { status, code }) => {
                let served = line.provider.is_some() && line.status < 400;
                let (n, b) = self.now_refused.entry((*status, code.clone())).or_default();
                *n += u64::from(served);
                b.add(id);
                true
            }
            (Decided::Refused { status, code }, Decided::Routed { provider, .. }) => {
                self.now_served
                    .entry((*status, code.clone(), provider.clone()))
                    .or_default()
                    .add(id);
                true
            }
            (
                Decided::Refused {
                    status: s0,
                    code: c0,
                },
                Decided::Refused {
                    status: s1,
                    code: c1,
                },
            ) => {
                let differ = s0 != s1 || c0 != c1;
                if differ {
                    self.refused_differently
                        .entry((format!("{s0} {c0}"), format!("{s1} {c1}")))
                        .or_default()
                        .add(id);
                }
                differ
            }
        };
        if changed {
            self.report.changed += 1;
        } else {
            self.report.unchanged += 1;
        }
    }

    /// The request's facts again, for the new policy.
    fn facts_of(&mut self, line: &Line, inputs: &Inputs, model: &str) -> RequestFacts {
        let country = line
            .country
            .as_deref()
            .and_then(Country::parse)
            .unwrap_or(Country::UNKNOWN);
        let location = Location {
            country,
            source: if country == Country::UNKNOWN {
                Source::Unknown(crate::location::Unknown::Absent)
            } else {
                Source::Given
            },
            edge: line.edge.unwrap_or(Edge::NotConfigured),
        };
        let tenant = line
            .tenant
            .as_deref()
            .filter(|t| *t != "anonymous" || self.policy.tenant(t).is_some())
            .map(|t| TenantId(t.to_string().into()));
        let mut capabilities = CapSet::EMPTY;
        for c in line
            .capabilities
            .iter()
            .filter_map(|c| Capability::from_name(c))
        {
            capabilities.insert(c);
        }
        let mut headers = Vec::new();
        let mut missing = false;
        for name in &self.header_names {
            match inputs.headers.get(name) {
                Some(Some(v)) => headers.push((name.clone(), header_value(self.policy, name, v))),
                Some(None) => {}
                None => missing = true,
            }
        }
        if missing {
            self.caveat(CAVEAT_HEADERS);
        }
        let pii = if self.policy.pii.used {
            match &line.pii {
                Some(p) => Some(crate::pii::Found {
                    counts: p
                        .found
                        .iter()
                        .filter_map(|(k, n)| self.policy.pii.kind_of(k).map(|k| (k, *n)))
                        .collect(),
                }),
                None => {
                    self.caveat(CAVEAT_PII);
                    Some(crate::pii::Found::default())
                }
            }
        } else {
            None
        };
        let mut privacy = PrivacyFlags::default();
        for name in &inputs.privacy {
            privacy.set(name);
        }
        RequestFacts {
            injection: None,
            forced_route: None,
            request_id: line.request_id.clone(),
            endpoint: inputs.endpoint,
            tenant,
            country,
            location,
            edge_region: inputs.edge_region.clone(),
            model: model.to_string(),
            stream: inputs.stream,
            privacy,
            prefs: inputs.provider.clone(),
            capabilities,
            betas: inputs.betas.clone(),
            dropped: Vec::new(),
            headers,
            affinity: None,
            prefix_keys: Vec::new(),
            seed: inputs
                .seed
                .as_deref()
                .and_then(|s| u64::from_str_radix(s, 16).ok()),
            input_tokens: inputs.input_tokens,
            output_tokens: inputs.output_tokens,
            completions: 1,
            unseen_media: 0,
            stored_history: false,
            tools: inputs.tools,
            // Replay decides again; what limits reserved is in the line, not decided anew.
            overhead_tokens: 0,
            provider_tools: 0,
            model_reads: Some(1),
            media_parts: inputs.media_parts,
            models: inputs.models.clone(),
            measured_ms: inputs.measured_ms.clone(),
            pii,
        }
    }

    /// What the new policy does with the request: the component's own decision.
    fn decide(&mut self, facts: &mut RequestFacts, inputs: &Inputs) -> Decided {
        // Authentication first, as the component does: a tenant the new policy does not have
        // is no tenant (anonymous where the policy allows callers without a key).
        match crate::auth::named(self.policy, facts.tenant.as_ref().map(|t| t.as_str())) {
            crate::auth::Named::Same => {}
            crate::auth::Named::AsAnonymous => {
                self.caveat(CAVEAT_TENANT);
                facts.tenant = None;
            }
            crate::auth::Named::Refused(code) => {
                if facts.tenant.is_some() {
                    self.caveat(CAVEAT_TENANT);
                }
                return Decided::Refused {
                    status: 401,
                    code: code.into(),
                };
            }
        }
        let d = decide(self.policy, facts);
        if let Some(r) = &d.refusal {
            return Decided::Refused {
                status: r.status,
                code: r.code.to_string(),
            };
        }
        // A guard that fails closed and may not be sent the text refuses the request.
        if d.guards.iter().any(|g| !g.allowed() && !g.usage.fail_open) {
            return Decided::Refused {
                status: 403,
                code: "guardrail_not_allowed".into(),
            };
        }
        let first = match &inputs.pinned {
            Some(p) => match d.candidates.iter().find(|c| c.provider.as_str() == p) {
                Some(c) => c,
                None => {
                    return Decided::Refused {
                        status: 403,
                        code: "previous_response_not_allowed".into(),
                    }
                }
            },
            None => match d.candidates.first() {
                Some(c) => c,
                None => {
                    return Decided::Refused {
                        status: 503,
                        code: "no_provider".into(),
                    }
                }
            },
        };
        Decided::Routed {
            provider: first.provider.0.to_string(),
            location: crate::pool::places(self.policy, first),
            // Kept where processed unless stated apart: for a pool, where its allowed replicas are.
            storage: if first.storage == first.location {
                crate::pool::places(self.policy, first)
            } else {
                first.storage.to_string()
            },
            model: Some(first.model.to_string()),
            prices: Some(Prices {
                input: first.input_price,
                output: first.output_price,
                cache_read: first.cache_read_price,
                cache_write: first.cache_write_price,
            }),
        }
    }

    /// The logged usage priced under both: as billed, and at the provider the new policy would
    /// have answered it: its first choice, or, when the first choice is the old one and a fallback
    /// answered (another provider, or another model of a route on the same one), that same
    /// fallback at the new catalog's prices (a provider failing is traffic, not policy).
    fn cost(&mut self, line: &Line, old: &Decided, new: &Decided) {
        let fallback_prices = match (old, new, &line.provider) {
            (
                Decided::Routed { provider: p0, .. },
                Decided::Routed {
                    provider: p1,
                    model: m1,
                    ..
                },
                Some(served),
            ) if p0 == p1
                && (served != p1
                    || line
                        .served_model
                        .as_ref()
                        .is_some_and(|m| Some(m) != m1.as_ref())) =>
            {
                let model = line.served_model.as_deref().or(line.model.as_deref());
                self.policy
                    .provider(served)
                    .zip(model)
                    .and_then(|(p, m)| p.models.get(m))
                    .map(|e| Prices {
                        input: e.input_price,
                        output: e.output_price,
                        cache_read: e.cache_read_price,
                        cache_write: e.cache_write_price,
                    })
            }
            _ => None,
        };
        let c = &mut self.report.cost;
        let Some(usage) = line.usage else {
            if matches!(new, Decided::Routed { .. }) {
                c.no_usage += 1;
            }
            return;
        };
        let new_cost = match new {
            Decided::Refused { .. } => Some(0.0),
            Decided::Routed { prices, .. } => {
                fallback_prices.or(*prices).and_then(|p| usage.cost(p))
            }
        };
        match (line.cost_usd, new_cost) {
            (Some(a), Some(b)) => {
                c.old_usd += a;
                c.new_usd += b;
                c.priced += 1;
            }
            _ => c.unpriced += 1,
        }
    }

    /// The report, changes largest first.
    pub fn finish(mut self) -> Report {
        fn moved(m: BTreeMap<(String, String), Bucket>) -> Vec<Moved> {
            let mut v: Vec<Moved> = m
                .into_iter()
                .map(|((from, to), bucket)| Moved { from, to, bucket })
                .collect();
            v.sort_by_key(|m| std::cmp::Reverse(m.bucket.requests));
            v
        }
        let mut now_refused: Vec<NowRefused> = std::mem::take(&mut self.now_refused)
            .into_iter()
            .map(|((status, code), (served_before, bucket))| NowRefused {
                status,
                code,
                served_before,
                bucket,
            })
            .collect();
        now_refused.sort_by_key(|m| std::cmp::Reverse(m.bucket.requests));
        let mut now_served: Vec<NowServed> = std::mem::take(&mut self.now_served)
            .into_iter()
            .map(|((was_status, was_code, provider), bucket)| NowServed {
                was_status,
                was_code,
                provider,
                bucket,
            })
            .collect();
        now_served.sort_by_key(|m| std::cmp::Reverse(m.bucket.requests));
        let mut r = self.report;
        r.now_refused = now_refused;
        r.now_served = now_served;
        r.refused_differently = moved(self.refused_differently);
        r.provider_moves = moved(self.provider_moves);
        r.jurisdiction_moves = moved(self.jurisdiction_moves);
        r.storage_moves = moved(self.storage_moves);
        r
    }
}

impl Report {
    /// The report for a terminal.
    pub fn text(&self) -> String {
        use std::fmt::Write as _;
        let mut o = String::new();
        let eg = |b: &Bucket| {
            if b.examples.is_empty() {
                String::new()
            } else {
                format!(", e.g. {}", b.examples.join(", "))
            }
        };
        let skipped: u64 = self.skipped.values().sum();
        let _ = writeln!(
            o,
            "replay against {}: {} lines, {} requests decided again, {} skipped",
            self.policy, self.lines, self.replayed, skipped
        );
        for (why, n) in &self.skipped {
            let _ = writeln!(o, "  skipped {n}: {why}");
        }
        let _ = writeln!(o, "{} unchanged, {} changed", self.unchanged, self.changed);
        if !self.now_refused.is_empty() {
            let _ = writeln!(o, "now refused:");
            for r in &self.now_refused {
                let _ = writeln!(
                    o,
                    "  {} {}: {} requests ({} had been answered){}",
                    r.status,
                    r.code,
                    r.bucket.requests,
                    r.served_before,
                    eg(&r.bucket)
                );
            }
        }
        if !self.now_served.is_empty() {
            let _ = writeln!(o, "now served (were refused):");
            for r in &self.now_served {
                let _ = writeln!(
                    o,
                    "  {} {} → {}: {} requests{}",
                    r.was_status,
                    r.was_code,
                    r.provider,
                    r.bucket.requests,
                    eg(&r.bucket)
                );
            }
        }
        for (title, list) in [
            ("refused differently:", &self.refused_differently),
            ("provider moves (first choice):", &self.provider_moves),
            (
                "jurisdiction moves (where the first choice processes data):",
                &self.jurisdiction_moves,
            ),
            (
                "storage moves (where the first choice keeps data):",
                &self.storage_moves,
            ),
        ] {
            if list.is_empty() {
                continue;
            }
            let _ = writeln!(o, "{title}");
            for m in list {
                let _ = writeln!(
                    o,
                    "  {} → {}: {} requests{}",
                    m.from,
                    m.to,
                    m.bucket.requests,
                    eg(&m.bucket)
                );
            }
        }
        let c = &self.cost;
        let diff = c.new_usd - c.old_usd;
        let pct = if c.old_usd > 0.0 {
            format!(", {:+.1}%", diff / c.old_usd * 100.0)
        } else {
            String::new()
        };
        let _ = writeln!(
            o,
            "cost of the logged usage of {} requests: ${:.6} → ${:.6} at catalog prices ({}{:.6}{pct})",
            c.priced,
            c.old_usd,
            c.new_usd,
            if diff < 0.0 { "-$" } else { "+$" },
            diff.abs()
        );
        if c.unpriced > 0 {
            let _ = writeln!(
                o,
                "  {} requests with usage have no price under one of the policies",
                c.unpriced
            );
        }
        if c.no_usage > 0 {
            let _ = writeln!(
                o,
                "  {} requests the new policy routes have no usage in the log (cost not known)",
                c.no_usage
            );
        }
        for (what, n) in &self.caveats {
            let _ = writeln!(o, "caveat: {n} requests: {what}");
        }
        o
    }
}
