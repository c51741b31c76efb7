//! `meridian report`: Meridian's log lines (one JSON object per request) read as a stream and
//! summed up for the people who answer for data protection and cost: requests, spend and
//! tokens per tenant, provider, model and day; where clients were against where their data was
//! processed, and every request that went outside a residency rule's jurisdictions (given the
//! policy; there should be none); refusals and fallbacks by reason; latency and time to the
//! first byte per provider; personal-data kinds found and what was done. Memory is bounded by
//! the number of distinct tenants, providers, models, days and countries, never by the number
//! of lines: percentiles come from fixed histograms.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use meridian::policy::{Country, CountrySet, Policy};
use serde_json::Value;

/// Which lines count.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Inclusive, Unix milliseconds.
    pub from_ms: Option<u64>,
    /// Exclusive, Unix milliseconds.
    pub to_ms: Option<u64>,
    pub tenant: Option<String>,
}

impl Filter {
    /// Whether a line of this time (Unix ms) and tenant is in the period and for the tenant.
    pub fn admits(&self, ts: u64, tenant: &str) -> bool {
        self.from_ms.is_none_or(|f| ts >= f)
            && self.to_ms.is_none_or(|t| ts < t)
            && self.tenant.as_deref().is_none_or(|t| t == tenant)
    }
}

/// Requests, what was served, spend and tokens.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    pub requests: u64,
    pub served: u64,
    pub spend_usd: f64,
    pub tokens: u64,
}

impl Tally {
    fn add(&mut self, served: bool, cost: f64, tokens: u64) {
        self.requests += 1;
        self.served += u64::from(served);
        self.spend_usd += cost;
        self.tokens += tokens;
    }
}

/// Milliseconds in fixed buckets: 1 ms up to 1 s, 10 ms up to 10 s, 1 s up to 10 minutes.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

const FINE: u64 = 1_000;
const MID: u64 = 10_000;
const MAX_MS: u64 = 600_000;

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; (FINE + (MID - FINE) / 10 + (MAX_MS - MID) / 1_000 + 1) as usize],
            total: 0,
        }
    }
}

impl Histogram {
    fn bucket(ms: u64) -> usize {
        let b = if ms < FINE {
            ms
        } else if ms < MID {
            FINE + (ms - FINE) / 10
        } else {
            FINE + (MID - FINE) / 10 + (ms.min(MAX_MS) - MID) / 1_000
        };
        b as usize
    }

    /// The bucket's upper bound, in ms.
    fn upper(b: usize) -> u64 {
        let b = b as u64;
        if b < FINE {
            b
        } else if b < FINE + (MID - FINE) / 10 {
            FINE + (b - FINE + 1) * 10 - 1
        } else {
            MID + (b - FINE - (MID - FINE) / 10 + 1) * 1_000 - 1
        }
    }

    pub fn add(&mut self, ms: u64) {
        let b = Self::bucket(ms).min(self.counts.len() - 1);
        self.counts[b] += 1;
        self.total += 1;
    }

    /// The value at or under which `p` percent of the samples fall (the bucket's upper bound).
    pub fn percentile(&self, p: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((p / 100.0) * self.total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (b, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Self::upper(b));
            }
        }
        None
    }
}

/// A request served outside a residency rule's (or its tenant's) jurisdictions.
#[derive(Debug, Clone, PartialEq)]
pub struct Crossing {
    pub request_id: String,
    pub ts_ms: u64,
    pub tenant: String,
    pub country: String,
    pub provider: String,
    pub location: String,
    /// `rule eu-only` or `tenant acme`.
    pub by: String,
}

/// The sums, as lines are added.
#[derive(Debug, Default)]
pub struct Report {
    filter: Filter,
    pub lines: u64,
    pub skipped: u64,
    pub total: Tally,
    pub first_ms: Option<u64>,
    pub last_ms: Option<u64>,
    pub by_tenant: BTreeMap<String, Tally>,
    pub by_provider: BTreeMap<String, Tally>,
    pub by_model: BTreeMap<String, Tally>,
    /// (day, tenant) → tally.
    pub by_day: BTreeMap<(String, String), Tally>,
    /// (client country, provider location) → served requests.
    pub matrix: BTreeMap<(String, String), u64>,
    pub crossings: Vec<Crossing>,
    pub crossings_total: u64,
    /// Meridian's error code → count.
    pub refusals: BTreeMap<String, u64>,
    /// (provider, failure) → failed attempts.
    pub fallbacks: BTreeMap<(String, String), u64>,
    pub latency: BTreeMap<String, Histogram>,
    pub first_byte: BTreeMap<String, Histogram>,
    /// (kind, action) → findings.
    pub pii: BTreeMap<(String, String), u64>,
    /// (guard, outcome) → verdicts.
    pub guards: BTreeMap<(String, String), u64>,
    /// Policy residency, to check each served request against.
    residency: Option<Residency>,
}

/// What the policy requires, by rule and by tenant, and where each provider processes data.
#[derive(Debug, Default)]
struct Residency {
    rules: BTreeMap<String, CountrySet>,
    tenants: BTreeMap<String, CountrySet>,
    providers: BTreeMap<String, CountrySet>,
}

/// Most crossings listed one by one (all are counted).
const MAX_LISTED: usize = 1_000;

/// `YYYY-MM-DD` of a Unix time in milliseconds (UTC).
pub fn day(ms: u64) -> String {
    let (y, m, d) = meridian::limits::civil_from_days((ms / 86_400_000) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

impl Report {
    pub fn new(filter: Filter, policy: Option<&Policy>) -> Report {
        let residency = policy.map(|p| Residency {
            rules: p
                .rules
                .iter()
                .filter_map(|r| {
                    r.require
                        .jurisdiction
                        .as_ref()
                        .map(|j| (r.id.to_string(), j.countries))
                })
                .collect(),
            tenants: p
                .tenants
                .iter()
                .filter_map(|t| {
                    t.jurisdictions
                        .as_ref()
                        .map(|j| (t.id.to_string(), j.countries))
                })
                .collect(),
            providers: p
                .providers
                .iter()
                .map(|pr| (pr.id.to_string(), pr.countries))
                .collect(),
        });
        Report {
            filter,
            residency,
            ..Report::default()
        }
    }

    /// Adds one log line; anything that is not one of Meridian's request lines is skipped.
    pub fn add_line(&mut self, line: &str) {
        let line = line.trim();
        if !line.starts_with('{') {
            self.skipped += 1;
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            self.skipped += 1;
            return;
        };
        let (Some(ts), Some(status), Some(id)) = (
            v["ts_ms"].as_u64(),
            v["status"].as_u64(),
            v["request_id"].as_str(),
        ) else {
            self.skipped += 1;
            return;
        };
        let tenant = v["tenant"].as_str().unwrap_or("-");
        if !self.filter.admits(ts, tenant) {
            return;
        }
        // Requests that never reached the routing (health checks, preflights, model lists)
        // are not inference: only lines with a model count.
        let Some(model) = v["model"].as_str() else {
            return;
        };
        self.lines += 1;
        self.first_ms = Some(self.first_ms.map_or(ts, |f| f.min(ts)));
        self.last_ms = Some(self.last_ms.map_or(ts, |l| l.max(ts)));
        let provider = v["provider"].as_str();
        let served = (200..300).contains(&status) && provider.is_some();
        let cost = v["cost_usd"].as_f64().unwrap_or(0.0);
        let tokens = v["usage"]["total_tokens"].as_u64().unwrap_or(0);
        self.total.add(served, cost, tokens);
        self.by_tenant
            .entry(tenant.to_string())
            .or_default()
            .add(served, cost, tokens);
        self.by_model
            .entry(model.to_string())
            .or_default()
            .add(served, cost, tokens);
        self.by_day
            .entry((day(ts), tenant.to_string()))
            .or_default()
            .add(served, cost, tokens);
        if let Some(p) = provider {
            self.by_provider
                .entry(p.to_string())
                .or_default()
                .add(served, cost, tokens);
            if let Some(d) = v["duration_ms"].as_u64() {
                self.latency.entry(p.to_string()).or_default().add(d);
            }
            if let Some(ms) = v["attempts"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["outcome"] == "ok"))
                .and_then(|x| x["ms"].as_u64())
            {
                self.first_byte.entry(p.to_string()).or_default().add(ms);
            }
        }
        if let Some(code) = v["error_code"].as_str() {
            *self.refusals.entry(code.to_string()).or_default() += 1;
        }
        for a in v["attempts"].as_array().into_iter().flatten() {
            if let (Some(p), Some(o)) = (a["provider"].as_str(), a["outcome"].as_str()) {
                if o != "ok" {
                    *self
                        .fallbacks
                        .entry((p.to_string(), o.to_string()))
                        .or_default() += 1;
                }
            }
        }
        for g in v["guards"].as_array().into_iter().flatten() {
            if let (Some(guard), Some(outcome)) = (g["guard"].as_str(), g["outcome"].as_str()) {
                *self
                    .guards
                    .entry((guard.to_string(), outcome.to_string()))
                    .or_default() += 1;
            }
        }
        let action = v["pii"]["action"].as_str().unwrap_or("none");
        if let Some(found) = v["pii"]["found"].as_object() {
            for (kind, n) in found {
                *self
                    .pii
                    .entry((kind.clone(), action.to_string()))
                    .or_default() += n.as_u64().unwrap_or(0);
            }
        }
        let country = v["country"].as_str().unwrap_or("XX").to_string();
        if served {
            let location = v["jurisdiction"].as_str().unwrap_or("?").to_string();
            *self
                .matrix
                .entry((country.clone(), location.clone()))
                .or_default() += 1;
            if let (Some(r), Some(p)) = (&self.residency, provider) {
                let mut by = Vec::new();
                let where_ = r.providers.get(p);
                let outside = |allowed: &CountrySet| {
                    where_.is_none_or(|w| w.iter().any(|c: Country| !allowed.contains(c)))
                };
                for rule in v["rules"].as_array().into_iter().flatten() {
                    let Some(name) = rule.as_str() else { continue };
                    if r.rules.get(name).is_some_and(outside) {
                        by.push(format!("rule {name}"));
                    }
                }
                if r.tenants.get(tenant).is_some_and(outside) {
                    by.push(format!("tenant {tenant}"));
                }
                if !by.is_empty() {
                    self.crossings_total += 1;
                    if self.crossings.len() < MAX_LISTED {
                        self.crossings.push(Crossing {
                            request_id: id.to_string(),
                            ts_ms: ts,
                            tenant: tenant.to_string(),
                            country,
                            provider: p.to_string(),
                            location,
                            by: by.join(", "),
                        });
                    }
                }
            }
        }
    }

    /// The sums as JSON (for CI and scripts).
    pub fn json(&self) -> Value {
        let tally = |t: &Tally| serde_json::json!({"requests": t.requests, "served": t.served, "spend_usd": t.spend_usd, "tokens": t.tokens});
        let map = |m: &BTreeMap<String, Tally>| -> Value {
            m.iter()
                .map(|(k, t)| (k.clone(), tally(t)))
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        let pct = |m: &BTreeMap<String, Histogram>| -> Value {
            m.iter()
                .map(|(k, h)| {
                    (
                        k.clone(),
                        serde_json::json!({"p50": h.percentile(50.0), "p95": h.percentile(95.0), "p99": h.percentile(99.0)}),
                    )
                })
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        serde_json::json!({
            "requests": self.total.requests,
            "skipped_lines": self.skipped,
            "total": tally(&self.total),
            "first_day": self.first_ms.map(day),
            "last_day": self.last_ms.map(day),
            "by_tenant": map(&self.by_tenant),
            "by_provider": map(&self.by_provider),
            "by_model": map(&self.by_model),
            "by_day": self.by_day.iter().map(|((d, t), v)| serde_json::json!({"day": d, "tenant": t, "requests": v.requests, "spend_usd": v.spend_usd})).collect::<Vec<_>>(),
            "matrix": self.matrix.iter().map(|((c, l), n)| serde_json::json!({"client": c, "processed_in": l, "requests": n})).collect::<Vec<_>>(),
            "residency_checked": self.residency.is_some(),
            "crossings": self.crossings_total,
            "crossings_listed": self.crossings.iter().map(|c| serde_json::json!({"request_id": c.request_id, "tenant": c.tenant, "client": c.country, "provider": c.provider, "by": c.by})).collect::<Vec<_>>(),
            "refusals": self.refusals,
            "fallbacks": self.fallbacks.iter().map(|((p, w), n)| serde_json::json!({"provider": p, "failure": w, "count": n})).collect::<Vec<_>>(),
            "latency_ms": pct(&self.latency),
            "first_byte_ms": pct(&self.first_byte),
            "personal_data": self.pii.iter().map(|((k, a), n)| serde_json::json!({"kind": k, "action": a, "count": n})).collect::<Vec<_>>(),
            "guards": self.guards.iter().map(|((g, o), n)| serde_json::json!({"guard": g, "outcome": o, "count": n})).collect::<Vec<_>>(),
        })
    }

    /// Per provider: p50, p95 and p99 of the whole request, then of the first byte (`-` when
    /// there are no samples).
    fn latency_cells(&self) -> Vec<(&str, [String; 6])> {
        let pct = |h: Option<&Histogram>, q: f64| {
            h.and_then(|h| h.percentile(q))
                .map_or("-".to_string(), |v| v.to_string())
        };
        self.latency
            .iter()
            .map(|(p, h)| {
                let f = self.first_byte.get(p);
                (
                    p.as_str(),
                    [
                        pct(Some(h), 50.0),
                        pct(Some(h), 95.0),
                        pct(Some(h), 99.0),
                        pct(f, 50.0),
                        pct(f, 95.0),
                        pct(f, 99.0),
                    ],
                )
            })
            .collect()
    }

    /// The summary for a terminal.
    pub fn text(&self) -> String {
        let mut o = String::new();
        let span = match (self.first_ms, self.last_ms) {
            (Some(f), Some(l)) => format!("{} to {}", day(f), day(l)),
            _ => "no requests".into(),
        };
        let _ = writeln!(
            o,
            "Meridian report: {} requests ({span}), {} served, ${:.6} spent, {} tokens ({} other lines skipped)",
            self.total.requests, self.total.served, self.total.spend_usd, self.total.tokens, self.skipped
        );
        for (title, map) in [
            ("tenant", &self.by_tenant),
            ("provider", &self.by_provider),
            ("model", &self.by_model),
        ] {
            let _ = writeln!(o, "\nby {title}:");
            for (k, t) in map {
                let _ = writeln!(
                    o,
                    "  {k:<28} {:>9} requests {:>9} served  ${:>12.6}  {:>11} tokens",
                    t.requests, t.served, t.spend_usd, t.tokens
                );
            }
        }
        let _ = writeln!(o, "\nclient country → where processed (served requests):");
        for ((c, l), n) in &self.matrix {
            let _ = writeln!(o, "  {c:<4} → {l:<12} {n:>9}");
        }
        match &self.residency {
            None => {
                let _ = writeln!(
                    o,
                    "\nresidency: not checked (give --policy to check every served request against its rules and tenant)"
                );
            }
            Some(_) => {
                let _ = writeln!(
                    o,
                    "\nrequests served outside a residency rule's or their tenant's jurisdictions: {}",
                    self.crossings_total
                );
                for c in &self.crossings {
                    let _ = writeln!(
                        o,
                        "  {} {} tenant {} client {} → {} ({}), by {}",
                        day(c.ts_ms),
                        c.request_id,
                        c.tenant,
                        c.country,
                        c.provider,
                        c.location,
                        c.by
                    );
                }
            }
        }
        let _ = writeln!(o, "\nrefusals and errors by code:");
        for (k, n) in &self.refusals {
            let _ = writeln!(o, "  {k:<32} {n:>9}");
        }
        let _ = writeln!(o, "\nfailed attempts (fallbacks) by provider and reason:");
        for ((p, why), n) in &self.fallbacks {
            let _ = writeln!(o, "  {p:<20} {why:<28} {n:>9}");
        }
        let _ = writeln!(
            o,
            "\nlatency per provider (ms; whole request / to the first byte of the answer):"
        );
        for (p, [a, b, c, d, e, f]) in self.latency_cells() {
            let _ = writeln!(
                o,
                "  {p:<20} p50 {a:>6} p95 {b:>6} p99 {c:>6} | first byte p50 {d:>6} p95 {e:>6} p99 {f:>6}"
            );
        }
        let _ = writeln!(o, "\npersonal data found (kind, what was done):");
        for ((k, a), n) in &self.pii {
            let _ = writeln!(o, "  {k:<20} {a:<10} {n:>9}");
        }
        if !self.guards.is_empty() {
            let _ = writeln!(o, "\nguard verdicts (guard, outcome):");
            for ((g, v), n) in &self.guards {
                let _ = writeln!(o, "  {g:<20} {v:<13} {n:>9}");
            }
        }
        o
    }

    /// A self-contained HTML page: no network, charts drawn in the page as SVG.
    pub fn html(&self) -> String {
        let mut o = String::new();
        o.push_str("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Meridian report</title><style>body{font:14px system-ui,sans-serif;margin:2em;max-width:72em}table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}.bad{color:#b00;font-weight:bold}svg text{font:11px sans-serif}</style></head><body>");
        let span = match (self.first_ms, self.last_ms) {
            (Some(f), Some(l)) => format!("{} to {}", day(f), day(l)),
            _ => "no requests".into(),
        };
        let _ = write!(
            o,
            "<h1>Meridian report</h1><p>{} requests ({}), {} served, ${:.6} spent at the catalog's prices, {} tokens.</p>",
            self.total.requests,
            esc(&span),
            self.total.served,
            self.total.spend_usd,
            self.total.tokens
        );
        // Requests per day, as bars.
        let mut per_day: BTreeMap<&str, u64> = BTreeMap::new();
        for ((d, _), t) in &self.by_day {
            *per_day.entry(d).or_default() += t.requests;
        }
        o.push_str("<h2>Requests per day</h2>");
        o.push_str(&bars(
            &per_day
                .iter()
                .map(|(k, v)| (k.to_string(), *v as f64))
                .collect::<Vec<_>>(),
            "",
        ));
        o.push_str("<h2>Spend per tenant</h2>");
        o.push_str(&bars(
            &self
                .by_tenant
                .iter()
                .map(|(k, t)| (k.clone(), t.spend_usd))
                .collect::<Vec<_>>(),
            "$",
        ));
        for (title, map) in [
            ("tenant", &self.by_tenant),
            ("provider", &self.by_provider),
            ("model", &self.by_model),
        ] {
            let _ = write!(o, "<h2>By {title}</h2><table><tr><th>{title}</th><th>requests</th><th>served</th><th>spend (USD)</th><th>tokens</th></tr>");
            for (k, t) in map {
                let _ = write!(
                    o,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.6}</td><td>{}</td></tr>",
                    esc(k),
                    t.requests,
                    t.served,
                    t.spend_usd,
                    t.tokens
                );
            }
            o.push_str("</table>");
        }
        // Country × where processed.
        let countries: Vec<&String> = {
            let mut v: Vec<&String> = self.matrix.keys().map(|(c, _)| c).collect();
            v.dedup();
            v
        };
        let mut places: Vec<&String> = self.matrix.keys().map(|(_, l)| l).collect();
        places.sort();
        places.dedup();
        o.push_str(
            "<h2>Client country × where the data was processed</h2><table><tr><th>client</th>",
        );
        for p in &places {
            let _ = write!(o, "<th>{}</th>", esc(p));
        }
        o.push_str("</tr>");
        for c in countries {
            let _ = write!(o, "<tr><td>{}</td>", esc(c));
            for p in &places {
                let n = self
                    .matrix
                    .get(&(c.clone(), (*p).clone()))
                    .copied()
                    .unwrap_or(0);
                let _ = write!(
                    o,
                    "<td>{}</td>",
                    if n == 0 { String::new() } else { n.to_string() }
                );
            }
            o.push_str("</tr>");
        }
        o.push_str("</table>");
        match &self.residency {
            None => o.push_str("<p>Residency not checked: run <code>meridian report --policy POLICY.toml</code> to check every served request against its rules and tenant.</p>"),
            Some(_) => {
                let _ = write!(
                    o,
                    "<h2>Served outside a residency rule's or tenant's jurisdictions</h2><p class=\"{}\">{} request(s).</p>",
                    if self.crossings_total == 0 { "" } else { "bad" },
                    self.crossings_total
                );
                if !self.crossings.is_empty() {
                    o.push_str("<table><tr><th>day</th><th>request</th><th>tenant</th><th>client</th><th>provider</th><th>processed in</th><th>required by</th></tr>");
                    for c in &self.crossings {
                        let _ = write!(
                            o,
                            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                            day(c.ts_ms),
                            esc(&c.request_id),
                            esc(&c.tenant),
                            esc(&c.country),
                            esc(&c.provider),
                            esc(&c.location),
                            esc(&c.by)
                        );
                    }
                    o.push_str("</table>");
                }
            }
        }
        for (title, rows) in [
            (
                "Refusals and errors by code",
                self.refusals
                    .iter()
                    .map(|(k, n)| (esc(k), *n))
                    .collect::<Vec<_>>(),
            ),
            (
                "Failed attempts by provider and reason",
                self.fallbacks
                    .iter()
                    .map(|((p, w), n)| (format!("{} — {}", esc(p), esc(w)), *n))
                    .collect(),
            ),
            (
                "Personal data found (kind — what was done)",
                self.pii
                    .iter()
                    .map(|((k, a), n)| (format!("{} — {}", esc(k), esc(a)), *n))
                    .collect(),
            ),
            (
                "Guard verdicts (guard — outcome)",
                self.guards
                    .iter()
                    .map(|((g, v), n)| (format!("{} — {}", esc(g), esc(v)), *n))
                    .collect(),
            ),
        ] {
            let _ = write!(o, "<h2>{title}</h2><table><tr><th></th><th>count</th></tr>");
            for (k, n) in rows {
                let _ = write!(o, "<tr><td>{k}</td><td>{n}</td></tr>");
            }
            o.push_str("</table>");
        }
        o.push_str("<h2>Latency per provider (ms)</h2><table><tr><th>provider</th><th>p50</th><th>p95</th><th>p99</th><th>first byte p50</th><th>p95</th><th>p99</th></tr>");
        for (p, cells) in self.latency_cells() {
            let _ = write!(o, "<tr><td>{}</td>", esc(p));
            for c in cells {
                let _ = write!(o, "<td>{c}</td>");
            }
            o.push_str("</tr>");
        }
        o.push_str("</table><p>Percentiles are the upper bounds of fixed buckets (1 ms to 1 s, 10 ms to 10 s, 1 s beyond).</p></body></html>\n");
        o
    }
}

/// Text for HTML.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A horizontal bar chart as inline SVG.
fn bars(rows: &[(String, f64)], unit: &str) -> String {
    if rows.is_empty() {
        return "<p>None.</p>".into();
    }
    let max = rows
        .iter()
        .map(|(_, v)| *v)
        .fold(0.0_f64, f64::max)
        .max(f64::MIN_POSITIVE);
    let h = 18;
    let mut o = format!(
        "<svg width=\"720\" height=\"{}\" role=\"img\">",
        rows.len() * h + 4
    );
    for (i, (k, v)) in rows.iter().enumerate() {
        let y = i * h + 2;
        let w = (v / max * 480.0)
            .round()
            .max(if *v > 0.0 { 1.0 } else { 0.0 });
        let value = if unit == "$" {
            format!("${v:.6}")
        } else {
            format!("{v}")
        };
        let _ = write!(
            o,
            "<text x=\"0\" y=\"{}\">{}</text><rect x=\"140\" y=\"{y}\" width=\"{w}\" height=\"{}\" fill=\"#4a7bd0\"/><text x=\"{}\" y=\"{}\">{}</text>",
            y + 12,
            esc(k),
            h - 4,
            146.0 + w,
            y + 12,
            esc(&value)
        );
    }
    o.push_str("</svg>");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_percentiles() {
        assert_eq!(day(0), "1970-01-01");
        assert_eq!(day(1_796_228_430_000), "2026-12-02");
        let mut h = Histogram::default();
        for ms in 1..=100 {
            h.add(ms);
        }
        assert_eq!(h.percentile(50.0), Some(50));
        assert_eq!(h.percentile(99.0), Some(99));
        let mut h = Histogram::default();
        h.add(1_234);
        assert_eq!(
            h.percentile(50.0),
            Some(1_239),
            "the 10 ms bucket's upper bound"
        );
        h.add(700_000);
        assert_eq!(h.percentile(100.0), Some(600_999));
    }
}
