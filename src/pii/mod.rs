//! Personal data in prompts: find it in the text the model will read, replace it with typed
//! placeholders before forwarding, and put the originals back into the answer. Pure: no I/O.
//!
//! Only the model's text is scanned: chat message contents (strings and `text` parts),
//! completions' `prompt` and embeddings' `input` (strings, never token arrays); never other JSON
//! fields. Detection is a guard, not a guarantee: see the README for what each detector finds.

mod detect;
mod restore;

#[cfg(test)]
mod corpus;
#[cfg(test)]
mod tests;

use serde_json::{Map, Value};

use crate::facts::Endpoint;
use crate::policy::pii::{KindSet, PiiConfig, BUILTIN_KINDS};

pub use restore::Restorer;

pub const EMAIL: usize = 0;
pub const PHONE: usize = 1;
pub const IBAN: usize = 2;
pub const CARD: usize = 3;
pub const IPV4: usize = 4;
pub const IPV6: usize = 5;
pub const US_SSN: usize = 6;
pub const UK_NINO: usize = 7;
pub const EU_VAT: usize = 8;

/// One finding: a kind and where it is, as byte offsets into the text (on char boundaries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finding {
    pub kind: usize,
    pub start: usize,
    pub end: usize,
}

/// Every detector of a policy: the built-ins and its own patterns, compiled once per request
/// that is scanned (policies without personal-data rules never build one).
pub struct Scanner<'p> {
    pub config: &'p PiiConfig,
    custom: Vec<regex_lite::Regex>,
}

impl<'p> Scanner<'p> {
    pub fn new(config: &'p PiiConfig) -> Scanner<'p> {
        // Validation compiled every pattern already; one that fails here is skipped, never a trap.
        let custom = config
            .custom
            .iter()
            .filter_map(|(_, p)| regex_lite::Regex::new(p).ok())
            .collect();
        Scanner { config, custom }
    }

    /// The findings in `text`, in order, never overlapping: where two detectors claim the same
    /// text the earlier start wins, then the longer match, then the detector listed first.
    pub fn scan(&self, text: &str) -> Vec<Finding> {
        let t = text.as_bytes();
        let tr = detect::Triggers::of(t);
        let mut all = Vec::new();
        if !tr.upper.is_empty() {
            detect::iban(t, &tr.upper, &mut all);
            detect::eu_vat(t, &tr.upper, &mut all);
            detect::uk_nino(t, &tr.upper, &mut all);
        }
        if !tr.digit.is_empty() {
            detect::card(t, &tr.digit, &mut all);
            detect::ipv4(t, &tr.digit, &mut all);
            detect::phone(t, &tr.digit, &mut all);
        }
        detect::us_ssn(t, &tr.dash, &mut all);
        detect::email(t, &tr.at, &mut all);
        detect::ipv6(t, &tr.colon, &mut all);
        for (j, re) in self.custom.iter().enumerate() {
            all.extend(re.find_iter(text).map(|m| Finding {
                kind: BUILTIN_KINDS.len() + j,
                start: m.start(),
                end: m.end(),
            }));
        }
        all.sort_by_key(|f| (f.start, std::cmp::Reverse(f.end)));
        let mut out: Vec<Finding> = Vec::with_capacity(all.len());
        for f in all {
            if f.end > f.start && out.last().is_none_or(|l| f.start >= l.end) {
                out.push(f);
            }
        }
        out
    }
}

/// What a request's text contains: a count per kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    /// (kind, count), by kind.
    pub counts: Vec<(usize, u32)>,
}

impl Found {
    pub fn kinds(&self) -> KindSet {
        let mut s = KindSet::EMPTY;
        for (k, _) in &self.counts {
            s.insert(*k);
        }
        s
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    fn add(&mut self, kind: usize) {
        match self.counts.binary_search_by_key(&kind, |(k, _)| *k) {
            Ok(i) => self.counts[i].1 += 1,
            Err(i) => self.counts.insert(i, (kind, 1)),
        }
    }

    /// `email=2, iban=1` (kinds only, never values).
    pub fn describe(&self, config: &PiiConfig) -> String {
        self.counts
            .iter()
            .map(|(k, n)| format!("{}={n}", config.kind_name(*k)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `{"email": 2, "iban": 1}`.
    pub fn to_json(&self, config: &PiiConfig) -> Value {
        Value::Object(
            self.counts
                .iter()
                .map(|(k, n)| (config.kind_name(*k).to_string(), Value::from(*n)))
                .collect(),
        )
    }
}

/// The strings of a request body the model reads.
fn texts(body: &Map<String, Value>, endpoint: Endpoint) -> Vec<&str> {
    let mut out = Vec::new();
    fn strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::String(s) => out.push(s.as_str()),
            Value::Array(items) => out.extend(items.iter().filter_map(Value::as_str)),
            _ => {}
        }
    }
    match endpoint {
        Endpoint::Chat => {
            for m in body
                .get("messages")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                match m.get("content") {
                    Some(Value::String(s)) => out.push(s.as_str()),
                    Some(Value::Array(parts)) => out.extend(
                        parts
                            .iter()
                            .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
                            .filter_map(|p| p.get("text").and_then(Value::as_str)),
                    ),
                    _ => {}
                }
            }
        }
        Endpoint::Completions => {
            if let Some(p) = body.get("prompt") {
                strings(p, &mut out);
            }
        }
        Endpoint::Embeddings => {
            if let Some(i) = body.get("input") {
                strings(i, &mut out);
            }
        }
        Endpoint::Messages => {
            fn blocks<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
                match v {
                    Value::String(s) => out.push(s),
                    Value::Array(items) => {
                        for b in items {
                            match b.get("type").and_then(Value::as_str) {
                                Some("text") => out.extend(b.get("text").and_then(Value::as_str)),
                                Some("tool_result") => {
                                    if let Some(c) = b.get("content") {
                                        blocks(c, out);
                                    }
                                }
                                _ => {}
                            }
                        }
                    }
                    _ => {}
                }
            }
            if let Some(sys) = body.get("system") {
                blocks(sys, &mut out);
            }
            for m in body
                .get("messages")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(c) = m.get("content") {
                    blocks(c, &mut out);
                }
            }
        }
    }
    out
}

/// The same strings, to rewrite.
fn texts_mut(body: &mut Map<String, Value>, endpoint: Endpoint) -> Vec<&mut String> {
    let mut out = Vec::new();
    fn strings<'a>(v: &'a mut Value, out: &mut Vec<&'a mut String>) {
        match v {
            Value::String(s) => out.push(s),
            Value::Array(items) => out.extend(items.iter_mut().filter_map(|i| match i {
                Value::String(s) => Some(s),
                _ => None,
            })),
            _ => {}
        }
    }
    match endpoint {
        Endpoint::Chat => {
            if let Some(Value::Array(ms)) = body.get_mut("messages") {
                for m in ms {
                    match m.get_mut("content") {
                        Some(Value::String(s)) => out.push(s),
                        Some(Value::Array(parts)) => {
                            for p in parts {
                                if p.get("type").and_then(Value::as_str) != Some("text") {
                                    continue;
                                }
                                if let Some(Value::String(s)) = p.get_mut("text") {
                                    out.push(s);
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        Endpoint::Completions => {
            if let Some(p) = body.get_mut("prompt") {
                strings(p, &mut out);
            }
        }
        Endpoint::Embeddings => {
            if let Some(i) = body.get_mut("input") {
                strings(i, &mut out);
            }
        }
        Endpoint::Messages => {
            fn blocks<'a>(v: &'a mut Value, out: &mut Vec<&'a mut String>) {
                match v {
                    Value::String(s) => out.push(s),
                    Value::Array(items) => {
                        for b in items {
                            let kind = b.get("type").and_then(Value::as_str).unwrap_or("");
                            match kind {
                                "text" => {
                                    if let Some(Value::String(s)) = b.get_mut("text") {
                                        out.push(s);
                                    }
                                }
                                "tool_result" => {
                                    if let Some(c) = b.get_mut("content") {
                                        blocks(c, out);
                                    }
                                }
                                _ => {}
                            }
                        }
                    }
                    _ => {}
                }
            }
            let (system, messages) = {
                let mut system = None;
                let mut messages = None;
                for (k, v) in body.iter_mut() {
                    match k.as_str() {
                        "system" => system = Some(v),
                        "messages" => messages = Some(v),
                        _ => {}
                    }
                }
                (system, messages)
            };
            if let Some(sys) = system {
                blocks(sys, &mut out);
            }
            if let Some(Value::Array(ms)) = messages {
                for m in ms {
                    if let Some(c) = m.get_mut("content") {
                        blocks(c, &mut out);
                    }
                }
            }
        }
    }
    out
}

/// Counts what the body's text contains.
pub fn scan_body(scanner: &Scanner, body: &Map<String, Value>, endpoint: Endpoint) -> Found {
    let mut found = Found::default();
    for text in texts(body, endpoint) {
        for f in scanner.scan(text) {
            found.add(f.kind);
        }
    }
    found
}

/// Placeholders made for one request: each distinct value of a kind gets its own number, the
/// same value the same placeholder (`[EMAIL_1]`, `[IBAN_2]`).
#[derive(Debug, Clone, Default)]
pub struct Redaction {
    /// (placeholder, original), in the order made.
    pub pairs: Vec<(String, String)>,
    /// How many findings were replaced.
    pub replaced: u32,
    /// Distinct values per kind so far: (kind, count).
    numbered: Vec<(usize, u32)>,
}

impl Redaction {
    fn placeholder(&mut self, config: &PiiConfig, kind: usize, original: &str) -> String {
        if let Some((p, _)) = self.pairs.iter().find(|(_, o)| o == original) {
            return p.clone();
        }
        let tag = config.kind_name(kind).to_ascii_uppercase();
        let n = match self.numbered.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                self.numbered.push((kind, 1));
                1
            }
        };
        let p = format!("[{tag}_{n}]");
        self.pairs.push((p.clone(), original.to_string()));
        p
    }

    /// Replaces findings of `kinds` in `text`. Text left between two replacements can itself
    /// read as a finding once its neighbour is gone (`2::2` after a phone number that took the
    /// first `2`), so the text is scanned again until nothing of those kinds is found (a few
    /// rounds at most: each one only shortens what is left).
    pub fn redact_text(&mut self, scanner: &Scanner, text: &str, kinds: KindSet) -> Option<String> {
        let mut current: Option<String> = None;
        for _ in 0..MAX_ROUNDS {
            let src = current.as_deref().unwrap_or(text);
            let findings: Vec<Finding> = scanner
                .scan(src)
                .into_iter()
                .filter(|f| kinds.contains(f.kind))
                .collect();
            if findings.is_empty() {
                break;
            }
            let mut out = String::with_capacity(src.len());
            let mut at = 0;
            for f in findings {
                out.push_str(&src[at..f.start]);
                let p = self.placeholder(scanner.config, f.kind, &src[f.start..f.end]);
                out.push_str(&p);
                self.replaced += 1;
                at = f.end;
            }
            out.push_str(&src[at..]);
            current = Some(out);
        }
        current
    }
}

/// Rounds of scanning a redacted text again.
const MAX_ROUNDS: usize = 4;

/// Replaces every finding of `kinds` in the body's text with its placeholder.
pub fn redact_body(
    scanner: &Scanner,
    body: &mut Map<String, Value>,
    endpoint: Endpoint,
    kinds: KindSet,
) -> Redaction {
    let mut r = Redaction::default();
    for text in texts_mut(body, endpoint) {
        if let Some(new) = r.redact_text(scanner, text, kinds) {
            *text = new;
        }
    }
    r
}
