//! `meridian report --record`: the record of processing activities (GDPR Article 30) for a
//! period, from the policy (who receives data, where they process and keep it, for how long,
//! what transfers to third countries rest on, what each tenant's data is for) and from the log
//! (how many requests each recipient was sent, the personal-data categories found and what was
//! done about them). As JSON, and as a self-contained HTML page.
//!
//! A recipient counts a request when Meridian sent it the request's data: each attempt of a
//! provider (a failed attempt was still sent), each verdict of an external guard. Meridian's
//! built-in detector sends nothing anywhere and is no recipient.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use meridian::policy::{CountrySet, Policy, Recipient};
use serde_json::{json, Value};

use crate::report::Filter;

struct Entry {
    id: String,
    kind: &'static str,
    processes: String,
    stores: String,
    retention_days: Option<u32>,
    zdr: bool,
    trains_on_inputs: Option<bool>,
    self_hosted: bool,
    third_country: bool,
    safeguard: Option<meridian::policy::Safeguard>,
    requests: u64,
}

pub struct Record<'p> {
    policy: &'p Policy,
    filter: Filter,
    recipients: Vec<Entry>,
    home: (String, CountrySet),
    requests: u64,
    refused: u64,
    by_tenant: BTreeMap<String, u64>,
    pii: BTreeMap<String, u64>,
    pii_actions: BTreeMap<String, u64>,
    first_ms: Option<u64>,
    last_ms: Option<u64>,
    skipped: u64,
}

fn entry<R: Recipient>(id: &str, kind: &'static str, r: &R, home: &CountrySet) -> Entry {
    Entry {
        id: id.to_string(),
        kind,
        processes: r.location().to_string(),
        stores: r.stored_in().to_string(),
        retention_days: r.retention_days(),
        zdr: r.zdr(),
        trains_on_inputs: r.trains_on_inputs(),
        self_hosted: r.self_hosted(),
        third_country: r.transfers_from(home),
        safeguard: r.safeguard(),
        requests: 0,
    }
}

impl<'p> Record<'p> {
    pub fn new(policy: &'p Policy, filter: Filter) -> Record<'p> {
        let home = match &policy.settings.record.home {
            Some(h) => (h.names.join(", "), h.countries),
            None => (
                "eea".to_string(),
                policy
                    .jurisdictions
                    .iter()
                    .find(|(n, _)| n == "eea")
                    .map(|(_, c)| *c)
                    .unwrap_or_default(),
            ),
        };
        let mut recipients: Vec<Entry> = policy
            .providers
            .iter()
            .map(|p| entry(p.id.as_str(), "provider", p, &home.1))
            .collect();
        recipients.extend(
            policy
                .guards
                .catalog
                .iter()
                .filter(|g| !g.is_builtin())
                .map(|g| entry(&g.id, "guard", g, &home.1)),
        );
        Record {
            policy,
            filter,
            recipients,
            home,
            requests: 0,
            refused: 0,
            by_tenant: BTreeMap::new(),
            pii: BTreeMap::new(),
            pii_actions: BTreeMap::new(),
            first_ms: None,
            last_ms: None,
            skipped: 0,
        }
    }

    fn count(&mut self, kind: &str, id: &str) {
        if let Some(e) = self
            .recipients
            .iter_mut()
            .find(|e| e.kind == kind && e.id == id)
        {
            e.requests += 1;
        }
    }

    /// Adds one log line; anything that is not a request's closing line is skipped.
    pub fn add_line(&mut self, line: &str) {
        let Ok(v) = serde_json::from_str::<Value>(line.trim()) else {
            self.skipped += 1;
            return;
        };
        // A stream's opening line: its closing line counts the request.
        if v["event"] == "stream_open" {
            return;
        }
        let (Some(ts), Some(status)) = (v["ts_ms"].as_u64(), v["status"].as_u64()) else {
            self.skipped += 1;
            return;
        };
        let tenant = v["tenant"].as_str().unwrap_or("anonymous");
        if !self.filter.admits(ts, tenant) || v["model"].as_str().is_none() {
            return;
        }
        self.requests += 1;
        self.first_ms = Some(self.first_ms.map_or(ts, |f| f.min(ts)));
        self.last_ms = Some(self.last_ms.map_or(ts, |l| l.max(ts)));
        if !(200..300).contains(&status) {
            self.refused += 1;
        }
        *self.by_tenant.entry(tenant.to_string()).or_default() += 1;
        // Each provider the request's data was sent to and each guard that judged it, once per
        // request.
        for p in distinct(&v["attempts"], "provider") {
            self.count("provider", p);
        }
        for g in distinct(&v["guards"], "guard") {
            self.count("guard", g);
        }
        if let Some(found) = v["pii"]["found"].as_object() {
            for (kind, n) in found {
                *self.pii.entry(kind.clone()).or_default() += n.as_u64().unwrap_or(0);
            }
            if let Some(a) = v["pii"]["action"].as_str().filter(|_| !found.is_empty()) {
                *self.pii_actions.entry(a.to_string()).or_default() += 1;
            }
        }
    }

    pub fn json(&self) -> Value {
        let day = |ms: Option<u64>| ms.map(crate::report::day);
        let recipients: Vec<Value> = self
            .recipients
            .iter()
            .map(|e| {
                json!({
                    "id": e.id,
                    "kind": e.kind,
                    "processes_in": e.processes,
                    "stores_in": e.stores,
                    "retention_days": e.retention_days,
                    "zdr": e.zdr,
                    "trains_on_inputs": e.trains_on_inputs,
                    "self_hosted": e.self_hosted,
                    "third_country": e.third_country,
                    "safeguard": e.safeguard.map(|s| s.name()),
                    "requests": e.requests,
                })
            })
            .collect();
        let transfers: Vec<Value> = self
            .recipients
            .iter()
            .filter(|e| e.third_country)
            .map(|e| {
                json!({
                    "recipient": e.id,
                    "kind": e.kind,
                    "processes_in": e.processes,
                    "stores_in": e.stores,
                    "safeguard": e.safeguard.map(|s| s.name()),
                    "safeguard_text": e.safeguard.map_or("none stated", |s| s.describe()),
                    "requests": e.requests,
                })
            })
            .collect();
        let purposes: Vec<Value> = self
            .policy
            .tenants
            .iter()
            .map(|t| {
                json!({
                    "tenant": t.id.as_str(),
                    "purposes": t.purposes.iter().map(|p| p.as_ref()).collect::<Vec<&str>>(),
                    "requests": self.by_tenant.get(t.id.as_str()).copied().unwrap_or(0),
                })
            })
            .collect();
        json!({
            "controller": self.policy.settings.record.controller.as_deref(),
            "policy": self.policy.version_label(),
            "home": self.home.0,
            "period": {
                "from": self.filter.from_ms.map(crate::report::day).or_else(|| day(self.first_ms)),
                "to": self.filter.to_ms.map(crate::report::day).or_else(|| day(self.last_ms)),
            },
            "requests": self.requests,
            "refused": self.refused,
            "recipients": recipients,
            "transfers": transfers,
            "personal_data": self.pii,
            "personal_data_actions": self.pii_actions,
            "purposes": purposes,
            "skipped_lines": self.skipped,
        })
    }

    pub fn text(&self) -> String {
        let j = self.json();
        let mut o = String::new();
        let _ = writeln!(
            o,
            "Record of processing ({}), {} request(s) from {} to {}",
            j["policy"].as_str().unwrap_or_default(),
            self.requests,
            j["period"]["from"].as_str().unwrap_or("-"),
            j["period"]["to"].as_str().unwrap_or("-")
        );
        for e in &self.recipients {
            let _ = writeln!(
                o,
                "  {} {}: processes in {}, keeps data in {}, retention {}, {} request(s){}",
                e.kind,
                e.id,
                e.processes,
                e.stores,
                e.retention_days
                    .map_or("unstated".to_string(), |d| format!("{d} day(s)")),
                e.requests,
                if e.third_country {
                    match e.safeguard {
                        Some(s) => {
                            format!("; transfer outside {} on {}", self.home.0, s.describe())
                        }
                        None => format!(
                            "; transfer outside {} with no safeguard stated",
                            self.home.0
                        ),
                    }
                } else {
                    String::new()
                }
            );
        }
        o
    }

    pub fn html(&self) -> String {
        let j = self.json();
        let mut o = String::from(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Record of processing</title>\
             <style>body{font:14px system-ui,sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:1em 0}\
             td,th{border:1px solid #bbb;padding:4px 8px;text-align:left}th{background:#eef}.warn{color:#a00;font-weight:bold}</style>\
             </head><body>",
        );
        let _ = write!(
            o,
            "<h1>Record of processing activities</h1><p>GDPR Article 30(1), drawn from the policy <code>{}</code> and Meridian's log.</p>\
             <dl><dt>Controller</dt><dd id=\"controller\">{}</dd><dt>Period</dt><dd id=\"period\">{} to {}</dd>\
             <dt>Requests</dt><dd id=\"requests\">{}</dd><dt>Refused</dt><dd id=\"refused\">{}</dd>\
             <dt>Transfers are judged from</dt><dd id=\"home\">{}</dd></dl>",
            esc(j["policy"].as_str().unwrap_or_default()),
            esc(j["controller"].as_str().unwrap_or("(not stated: [settings.record] controller)")),
            esc(j["period"]["from"].as_str().unwrap_or("-")),
            esc(j["period"]["to"].as_str().unwrap_or("-")),
            self.requests,
            self.refused,
            esc(&self.home.0),
        );
        o.push_str("<h2>Recipients</h2><table id=\"recipients\"><tr><th>Recipient</th><th>Kind</th><th>Processes in</th><th>Keeps data in</th><th>Retention</th><th>Zero retention</th><th>Trains on inputs</th><th>Requests sent</th></tr>");
        for e in &self.recipients {
            let _ = write!(
                o,
                "<tr data-recipient=\"{id}\"><td>{id}</td><td>{}</td><td class=\"processes\">{}</td><td class=\"stores\">{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"requests\">{}</td></tr>",
                e.kind,
                esc(&e.processes),
                esc(&e.stores),
                e.retention_days.map_or("unstated".to_string(), |d| format!("{d} days")),
                if e.zdr { "yes" } else { "no" },
                match e.trains_on_inputs {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "unstated",
                },
                e.requests,
                id = esc(&e.id),
            );
        }
        o.push_str("</table><h2>Transfers to third countries</h2>");
        let transfers: Vec<&Entry> = self.recipients.iter().filter(|e| e.third_country).collect();
        if transfers.is_empty() {
            o.push_str(
                "<p id=\"no-transfers\">None: every recipient processes and keeps data inside.</p>",
            );
        } else {
            o.push_str("<table id=\"transfers\"><tr><th>Recipient</th><th>Processes in</th><th>Keeps data in</th><th>Safeguard</th><th>Requests sent</th></tr>");
            for e in transfers {
                let _ = write!(
                    o,
                    "<tr data-transfer=\"{id}\"><td>{id}</td><td>{}</td><td>{}</td><td class=\"safeguard{}\">{}</td><td class=\"requests\">{}</td></tr>",
                    esc(&e.processes),
                    esc(&e.stores),
                    if e.safeguard.is_none() { " warn" } else { "" },
                    esc(e.safeguard.map_or("none stated", |s| s.describe())),
                    e.requests,
                    id = esc(&e.id),
                );
            }
            o.push_str("</table>");
        }
        o.push_str("<h2>Categories of personal data found</h2><table id=\"personal-data\"><tr><th>Category</th><th>Found</th></tr>");
        for (k, n) in &self.pii {
            let _ = write!(
                o,
                "<tr data-kind=\"{k}\"><td>{k}</td><td class=\"count\">{n}</td></tr>",
                k = esc(k)
            );
        }
        o.push_str("</table><table id=\"personal-data-actions\"><tr><th>What was done</th><th>Requests</th></tr>");
        for (k, n) in &self.pii_actions {
            let _ = write!(
                o,
                "<tr data-action=\"{k}\"><td>{k}</td><td class=\"count\">{n}</td></tr>",
                k = esc(k)
            );
        }
        o.push_str("</table><h2>Purposes per tenant</h2><table id=\"purposes\"><tr><th>Tenant</th><th>Purposes</th><th>Requests</th></tr>");
        for t in j["purposes"].as_array().into_iter().flatten() {
            let purposes: Vec<&str> = t["purposes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let _ = write!(
                o,
                "<tr data-tenant=\"{id}\"><td>{id}</td><td>{}</td><td class=\"requests\">{}</td></tr>",
                if purposes.is_empty() {
                    "<span class=\"warn\">not stated</span>".to_string()
                } else {
                    esc(&purposes.join("; "))
                },
                t["requests"],
                id = esc(t["tenant"].as_str().unwrap_or_default()),
            );
        }
        o.push_str("</table><p>Counts are requests whose data Meridian sent to the recipient (every attempt, failed ones too) in the period; the catalog's statements (location, storage, retention, safeguard) are the policy's.</p></body></html>\n");
        o
    }
}

/// The distinct values of `key` in a list of objects.
fn distinct<'v>(list: &'v Value, key: &str) -> Vec<&'v str> {
    let mut out: Vec<&str> = list
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x[key].as_str())
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

fn esc(s: &str) -> String {
    crate::report::esc(s)
}
