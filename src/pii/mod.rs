//! Personal data in prompts: find it in the text the model will read, replace it with typed
//! placeholders before forwarding, and put the originals back into the answer. Pure: no I/O.
//!
//! Everything the model reads is scanned (the walk in [`crate::request`] says what that is); content no detector can
//! read (images, audio, files) is counted as `unscannable`, so a rule can refuse or route it.
//! Detection is a guard, not a guarantee: `docs/policy.md` says what each detector finds.

mod detect;
mod restore;

#[cfg(test)]
mod corpus;
#[cfg(test)]
mod tests;

use serde_json::{Map, Value};

use crate::policy::pii::{KindSet, PiiConfig, BUILTIN_KINDS};
use crate::request::Endpoint;

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

    /// Counts what the detectors find in one text.
    pub fn add_findings(&mut self, scanner: &Scanner, text: &str) {
        for f in scanner.scan(text) {
            self.add(f.kind);
        }
    }

    /// With `n` parts no detector can read, counted as `unscannable`.
    pub fn with_unscannable(mut self, n: u64) -> Found {
        self.add_n(
            crate::policy::pii::UNSCANNABLE,
            u32::try_from(n).unwrap_or(u32::MAX),
        );
        self
    }

    fn add(&mut self, kind: usize) {
        self.add_n(kind, 1);
    }

    fn add_n(&mut self, kind: usize, n: u32) {
        if n == 0 {
            return;
        }
        match self.counts.binary_search_by_key(&kind, |(k, _)| *k) {
            Ok(i) => self.counts[i].1 = self.counts[i].1.saturating_add(n),
            Err(i) => self.counts.insert(i, (kind, n)),
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

/// Counts what the body's text contains (the text [`crate::request`]'s walk hands over);
/// content no detector can read (media parts) counts as `unscannable`.
pub fn scan_body(scanner: &Scanner, body: &mut Map<String, Value>, endpoint: Endpoint) -> Found {
    let mut found = Found::default();
    let reading = crate::request::texts(endpoint, body, &mut |_, text| {
        found.add_findings(scanner, text);
    });
    found.with_unscannable(reading.media)
}

/// Placeholders made for one request: each distinct value of a kind gets its own number, the
/// same value the same placeholder (`[EMAIL_1]`, `[IBAN_2]`). Looking a value up is a hash
/// lookup, so redaction is linear in the text and the number of findings.
#[derive(Debug, Clone, Default)]
pub struct Redaction {
    /// (placeholder, original), in the order made.
    pub pairs: Vec<(String, String)>,
    /// How many findings were replaced.
    pub replaced: u32,
    /// Distinct values per kind so far: (kind, count).
    numbered: Vec<(usize, u32)>,
    /// Original → its position in `pairs`.
    index: std::collections::HashMap<String, usize>,
}

impl Redaction {
    fn placeholder(&mut self, config: &PiiConfig, kind: usize, original: &str) -> &str {
        if let Some(&i) = self.index.get(original) {
            return &self.pairs[i].0;
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
        self.index.insert(original.to_string(), self.pairs.len());
        self.pairs
            .push((format!("[{tag}_{n}]"), original.to_string()));
        &self.pairs[self.pairs.len() - 1].0
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
                out.push_str(self.placeholder(scanner.config, f.kind, &src[f.start..f.end]));
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
    crate::request::texts(endpoint, body, &mut |_, text| {
        if let Some(new) = r.redact_text(scanner, text, kinds) {
            *text = new;
        }
    });
    r
}
