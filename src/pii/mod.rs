//! Personal data in prompts: find it in the text the model will read, replace it with typed
//! placeholders before forwarding, and put the originals back into the answer. Pure: no I/O.
//!
//! Everything the model reads is scanned ([`visit_texts`] lists it); content no detector can
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
use crate::routes::Endpoint;

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

/// Visits every string of a request body that the model reads, and reports content it reads
/// that no detector can (`opaque`): chat messages (text and refusal parts, tool-call and
/// function-call arguments, tool results), tool and function definitions (descriptions and
/// schemas), structured-output schemas and predicted outputs; completions' `prompt` and
/// `suffix`; embeddings' `input` (strings, never token arrays); Anthropic's `system`, text
/// blocks, tool-use input, tool results (nested blocks included), documents with text and tool
/// definitions. Images, audio, PDFs and other files (inline or by reference, by URL or by id)
/// are opaque. Never other JSON fields (`user`, `metadata`, sampling options).
pub(crate) fn visit_texts(
    body: &mut Map<String, Value>,
    endpoint: Endpoint,
    text: &mut dyn FnMut(&mut String),
    opaque: &mut dyn FnMut(),
) {
    let mut v = Visit { text, opaque };
    for (k, val) in body.iter_mut() {
        match (endpoint, k.as_str()) {
            (Endpoint::Chat, "messages") => {
                for m in arr(val) {
                    v.chat_message(m);
                }
            }
            (Endpoint::Chat, "tools" | "functions") => {
                for t in arr(val) {
                    v.all(t.get_mut("function").unwrap_or(&mut Value::Null));
                    v.all(t.get_mut("custom").unwrap_or(&mut Value::Null));
                    if t.get("function").is_none() && t.get("custom").is_none() {
                        v.all(t); // the legacy `functions` form
                    }
                }
            }
            (Endpoint::Chat, "response_format") => {
                v.all(val.get_mut("json_schema").unwrap_or(&mut Value::Null))
            }
            (Endpoint::Chat, "prediction") => {
                v.content(val.get_mut("content").unwrap_or(&mut Value::Null))
            }
            (Endpoint::Completions, "prompt" | "suffix") | (Endpoint::Embeddings, "input") => {
                v.strings(val)
            }
            (Endpoint::Messages, "system") => v.blocks(val),
            (Endpoint::Messages, "messages") => {
                for m in arr(val) {
                    v.blocks(m.get_mut("content").unwrap_or(&mut Value::Null));
                }
            }
            (Endpoint::Messages, "tools") => {
                for t in arr(val) {
                    if let Some(d) = t.get_mut("description") {
                        v.all(d);
                    }
                    if let Some(s) = t.get_mut("input_schema") {
                        v.all(s);
                    }
                }
            }
            (Endpoint::Responses, "instructions") => v.strings(val),
            (Endpoint::Responses, "input") => match val {
                Value::String(s) => (v.text)(s),
                other => arr(other).for_each(|item| v.response_item(item)),
            },
            (Endpoint::Responses, "tools") => {
                for t in arr(val) {
                    for k in ["description", "parameters"] {
                        if let Some(x) = t.get_mut(k) {
                            v.all(x);
                        }
                    }
                }
            }
            (Endpoint::Responses, "text") => {
                if let Some(s) = val.get_mut("format").and_then(|f| f.get_mut("schema")) {
                    v.all(s);
                }
            }
            _ => {}
        }
    }
}

fn arr(v: &mut Value) -> std::slice::IterMut<'_, Value> {
    match v {
        Value::Array(a) => a.iter_mut(),
        _ => [].iter_mut(),
    }
}

struct Visit<'a> {
    text: &'a mut dyn FnMut(&mut String),
    opaque: &'a mut dyn FnMut(),
}

impl Visit<'_> {
    /// A string, or an array's strings (token arrays are not text).
    fn strings(&mut self, v: &mut Value) {
        match v {
            Value::String(s) => (self.text)(s),
            Value::Array(items) => {
                for i in items {
                    if let Value::String(s) = i {
                        (self.text)(s);
                    }
                }
            }
            _ => {}
        }
    }

    /// Every string value inside (tool input, schemas): keys are the client's names.
    fn all(&mut self, v: &mut Value) {
        match v {
            Value::String(s) => (self.text)(s),
            Value::Array(items) => items.iter_mut().for_each(|i| self.all(i)),
            Value::Object(o) => o.values_mut().for_each(|i| self.all(i)),
            _ => {}
        }
    }

    /// A chat `content`: a string or parts.
    fn content(&mut self, c: &mut Value) {
        match c {
            Value::String(s) => (self.text)(s),
            Value::Array(parts) => {
                for p in parts {
                    match p.get("type").and_then(Value::as_str) {
                        Some("text") => {
                            if let Some(Value::String(s)) = p.get_mut("text") {
                                (self.text)(s);
                            }
                        }
                        Some("refusal") => {
                            if let Some(Value::String(s)) = p.get_mut("refusal") {
                                (self.text)(s);
                            }
                        }
                        Some("image_url" | "input_audio" | "file") => (self.opaque)(),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }

    fn chat_message(&mut self, m: &mut Value) {
        let Value::Object(m) = m else { return };
        for (k, val) in m.iter_mut() {
            match k.as_str() {
                "content" => self.content(val),
                "name" => {
                    if let Value::String(s) = val {
                        (self.text)(s);
                    }
                }
                "tool_calls" => {
                    for call in arr(val) {
                        if let Some(Value::String(a)) = call
                            .get_mut("function")
                            .and_then(|f| f.get_mut("arguments"))
                        {
                            (self.text)(a);
                        }
                    }
                }
                "function_call" => {
                    if let Some(Value::String(a)) = val.get_mut("arguments") {
                        (self.text)(a);
                    }
                }
                "audio" => (self.opaque)(),
                _ => {}
            }
        }
    }

    /// A Responses input item: a message's text parts, a function call's arguments, a tool's
    /// output, a reasoning summary; media parts are opaque.
    fn response_item(&mut self, item: &mut Value) {
        let kind = crate::wire::fields::item_kind(item).to_string();
        match kind.as_str() {
            "message" => match item.get_mut("content") {
                Some(Value::String(s)) => (self.text)(s),
                Some(Value::Array(parts)) => {
                    for p in parts {
                        match p.get("type").and_then(Value::as_str) {
                            Some("input_text" | "output_text") => {
                                if let Some(Value::String(s)) = p.get_mut("text") {
                                    (self.text)(s);
                                }
                            }
                            Some("refusal") => {
                                if let Some(Value::String(s)) = p.get_mut("refusal") {
                                    (self.text)(s);
                                }
                            }
                            Some("input_image" | "input_file" | "input_audio") => (self.opaque)(),
                            _ => {}
                        }
                    }
                }
                _ => {}
            },
            "function_call" | "custom_tool_call" => {
                for k in ["arguments", "input"] {
                    if let Some(Value::String(s)) = item.get_mut(k) {
                        (self.text)(s);
                    }
                }
            }
            "function_call_output" | "custom_tool_call_output" => {
                if let Some(o) = item.get_mut("output") {
                    self.all(o);
                }
            }
            "reasoning" => {
                if let Some(s) = item.get_mut("summary") {
                    self.all(s);
                }
            }
            _ => {}
        }
    }

    /// Anthropic content: a string or blocks.
    fn blocks(&mut self, v: &mut Value) {
        match v {
            Value::String(s) => (self.text)(s),
            Value::Array(items) => items.iter_mut().for_each(|b| self.block(b)),
            _ => {}
        }
    }

    fn block(&mut self, b: &mut Value) {
        let kind = b.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "text" => {
                if let Some(Value::String(s)) = b.get_mut("text") {
                    (self.text)(s);
                }
            }
            "tool_use" | "server_tool_use" | "mcp_tool_use" => {
                if let Some(i) = b.get_mut("input") {
                    self.all(i);
                }
            }
            "tool_result" | "mcp_tool_result" => {
                if let Some(c) = b.get_mut("content") {
                    self.blocks(c);
                }
            }
            "document" => {
                for k in ["title", "context"] {
                    if let Some(Value::String(s)) = b.get_mut(k) {
                        (self.text)(s);
                    }
                }
                let Some(src) = b.get_mut("source") else {
                    return;
                };
                match src.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        if let Some(Value::String(s)) = src.get_mut("data") {
                            (self.text)(s);
                        }
                    }
                    Some("content") => {
                        if let Some(c) = src.get_mut("content") {
                            self.blocks(c);
                        }
                    }
                    _ => (self.opaque)(),
                }
            }
            "image" | "container_upload" => (self.opaque)(),
            _ => {}
        }
    }
}

/// Counts what the body's text contains; content no detector can read counts as
/// `unscannable`.
pub fn scan_body(scanner: &Scanner, body: &mut Map<String, Value>, endpoint: Endpoint) -> Found {
    let mut found = Found::default();
    let mut opaque = 0u32;
    visit_texts(
        body,
        endpoint,
        &mut |text| {
            for f in scanner.scan(text) {
                found.add(f.kind);
            }
        },
        &mut || opaque += 1,
    );
    found.add_n(crate::policy::pii::UNSCANNABLE, opaque);
    found
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
    visit_texts(
        body,
        endpoint,
        &mut |text| {
            if let Some(new) = r.redact_text(scanner, text, kinds) {
                *text = new;
            }
        },
        &mut || {},
    );
    r
}
