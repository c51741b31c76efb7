//! Guards: what a guard is sent and how its answer reads (each wire), when an answer is a hit
//! for a rule's use, and what the audit keeps of a guard's run ([`Verdict`]). Pure: the calls
//! themselves are made by `api::guards` over the [`Transport`](crate::transport::Transport).

pub mod builtin;

use serde_json::{json, Value};

use crate::policy::{Guard, GuardAction, GuardOn, GuardUse, GuardWire};
use crate::transport::{OutboundRequest, UpMethod, Wire};

pub use crate::policy::OUTPUT_WINDOW_CHARS;

/// One label of a guard's answer: its name, its score (0 to 1) and whether the guard itself
/// flagged it.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    pub name: String,
    pub score: f64,
    pub flagged: bool,
}

/// The most bytes of a guard's answer that are read.
pub const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// The request that asks `guard` about `text` (`on`: the client's input or the model's answer).
pub fn request(guard: &Guard, key: Option<&str>, text: &str, on: GuardOn) -> OutboundRequest {
    let base = guard.url.as_ref().map_or("", |u| u.0.as_ref());
    let (url, body) = match guard.wire {
        GuardWire::OpenAiModeration => {
            let mut b = json!({ "input": text });
            if let Some(m) = &guard.model {
                b["model"] = json!(m.as_ref());
            }
            (format!("{}/moderations", base.trim_end_matches('/')), b)
        }
        GuardWire::LlamaGuard => {
            // Llama Guard judges the conversation's last turn: the user's, or the agent's answer.
            let messages = match on {
                GuardOn::Input => json!([{ "role": "user", "content": text }]),
                GuardOn::Output => json!([
                    { "role": "user", "content": "" },
                    { "role": "assistant", "content": text }
                ]),
            };
            (
                format!("{}/chat/completions", base.trim_end_matches('/')),
                json!({
                    "model": guard.model.as_deref().unwrap_or_default(),
                    "messages": messages,
                    "max_tokens": 32,
                    "temperature": 0,
                    "stream": false,
                }),
            )
        }
        GuardWire::HttpClassifier | GuardWire::Builtin => (
            base.to_string(),
            json!({ "input": text, "kind": guard.kind.name(), "on": on.name() }),
        ),
    };
    let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
    if let Some(k) = key {
        headers.push(("authorization".into(), format!("Bearer {k}")));
    }
    OutboundRequest {
        url,
        headers,
        body: crate::json::to_vec(&body).unwrap_or_default(),
        wire: Wire::OpenAi,
        idle_timeout_ms: 0,
        method: UpMethod::Post,
        all_headers: false,
        read_load: false,
    }
}

/// The labels of a guard's answer, or why it cannot be read.
pub fn labels(guard: &Guard, body: &[u8]) -> Result<Vec<Label>, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|_| "the answer is not JSON".to_string())?;
    match guard.wire {
        GuardWire::OpenAiModeration => {
            let results = v["results"]
                .as_array()
                .ok_or("the answer has no `results`")?;
            let mut out: Vec<Label> = Vec::new();
            for r in results {
                let cats = r["categories"]
                    .as_object()
                    .ok_or("a result has no `categories`")?;
                for (name, flagged) in cats {
                    let score = r["category_scores"][name].as_f64().unwrap_or(0.0);
                    let flagged = flagged.as_bool().unwrap_or(false);
                    match out.iter_mut().find(|l| l.name == *name) {
                        Some(l) => {
                            l.score = l.score.max(score);
                            l.flagged |= flagged;
                        }
                        None => out.push(Label {
                            name: name.clone(),
                            score,
                            flagged,
                        }),
                    }
                }
            }
            Ok(out)
        }
        GuardWire::LlamaGuard => {
            let content = v["choices"][0]["message"]["content"]
                .as_str()
                .ok_or("the answer has no `choices[0].message.content`")?;
            let mut lines = content.trim().lines();
            match lines.next().map(str::trim) {
                Some("safe") => Ok(Vec::new()),
                Some("unsafe") => {
                    let cats: Vec<Label> = lines
                        .next()
                        .unwrap_or_default()
                        .split(',')
                        .map(str::trim)
                        .filter(|c| !c.is_empty())
                        .map(|c| Label {
                            name: c.to_string(),
                            score: 1.0,
                            flagged: true,
                        })
                        .collect();
                    if cats.is_empty() {
                        Ok(vec![Label {
                            name: "unsafe".into(),
                            score: 1.0,
                            flagged: true,
                        }])
                    } else {
                        Ok(cats)
                    }
                }
                _ => Err("the guard model answered neither `safe` nor `unsafe`".into()),
            }
        }
        GuardWire::HttpClassifier | GuardWire::Builtin => {
            // `[{label, score}]`, `[[{label, score}]]` (a batch of one) or `{"labels": […]}`.
            let list = match &v {
                Value::Array(a) if a.first().is_some_and(Value::is_array) => &a[0],
                Value::Array(_) => &v,
                Value::Object(o) => o.get("labels").ok_or("the answer has no `labels`")?,
                _ => {
                    return Err(
                        "the answer is neither a list of labels nor `{\"labels\": …}`".into(),
                    )
                }
            };
            let list = list.as_array().ok_or("`labels` is not a list")?;
            list.iter()
                .map(|l| {
                    let name = l["label"].as_str().ok_or("a label has no `label`")?;
                    let score = l["score"]
                        .as_f64()
                        .ok_or("a label has no numeric `score`")?;
                    Ok(Label {
                        name: name.to_string(),
                        flagged: score >= 0.5 && guard.labels.iter().any(|g| g == name),
                        score,
                    })
                })
                .collect()
        }
    }
}

/// The label that makes this answer a hit for `usage`, with its score: among the labels the use
/// counts (its own, else the guard's, else all), the strongest whose score reaches the use's
/// threshold, or that the guard flagged when the use sets none.
pub fn hit<'l>(guard: &Guard, usage: &GuardUse, labels: &'l [Label]) -> Option<&'l Label> {
    let counted = |name: &str| {
        if !usage.labels.is_empty() {
            usage.labels.iter().any(|l| l == name)
        } else if !guard.labels.is_empty() {
            guard.labels.iter().any(|l| l == name)
        } else {
            true
        }
    };
    labels
        .iter()
        .filter(|l| counted(&l.name))
        .filter(|l| usage.threshold.map_or(l.flagged, |t| l.score >= t))
        .max_by(|a, b| a.score.total_cmp(&b.score))
}

/// The text a whole answer gives the client, in any protocol's shape: chat's message contents
/// and tool-call arguments, a completion's text, Anthropic's text blocks and tool inputs, the
/// Responses API's output text. A blank line between pieces.
pub fn answer_text(body: &[u8]) -> String {
    let mut out = String::new();
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        // Not JSON: the whole body is what the client would read.
        return String::from_utf8_lossy(body).into_owned();
    };
    let mut put = |s: &str| {
        if !s.is_empty() {
            if !out.is_empty() {
                out.push_str("\n\n");
            }
            out.push_str(s);
        }
    };
    for c in v["choices"].as_array().into_iter().flatten() {
        put(c["message"]["content"].as_str().unwrap_or_default());
        put(c["text"].as_str().unwrap_or_default());
        for call in c["message"]["tool_calls"].as_array().into_iter().flatten() {
            put(call["function"]["arguments"].as_str().unwrap_or_default());
        }
    }
    for b in v["content"].as_array().into_iter().flatten() {
        put(b["text"].as_str().unwrap_or_default());
        if let Some(input) = b.get("input") {
            put(&input.to_string());
        }
    }
    for item in v["output"].as_array().into_iter().flatten() {
        for part in item["content"].as_array().into_iter().flatten() {
            put(part["text"].as_str().unwrap_or_default());
        }
        put(item["arguments"].as_str().unwrap_or_default());
    }
    out
}

/// Appends the text a stream's checked lines carry (`data:` lines of chat, completions,
/// Anthropic or Responses events) to `out`.
pub fn stream_text(lines: &[u8], out: &mut String) {
    for line in lines.split(|b| *b == b'\n') {
        let Some(data) = line.strip_prefix(b"data:") else {
            continue;
        };
        let data = data.trim_ascii();
        if data.is_empty() || data == b"[DONE]" {
            continue;
        }
        let Ok(v) = serde_json::from_slice::<Value>(data) else {
            continue;
        };
        for c in v["choices"].as_array().into_iter().flatten() {
            out.push_str(c["delta"]["content"].as_str().unwrap_or_default());
            out.push_str(c["text"].as_str().unwrap_or_default());
            for call in c["delta"]["tool_calls"].as_array().into_iter().flatten() {
                out.push_str(call["function"]["arguments"].as_str().unwrap_or_default());
            }
        }
        // Anthropic's `content_block_delta` (text or tool input) and Responses' text deltas.
        match &v["delta"] {
            Value::String(s) => out.push_str(s),
            Value::Object(d) => {
                for k in ["text", "partial_json"] {
                    out.push_str(d.get(k).and_then(Value::as_str).unwrap_or_default());
                }
            }
            _ => {}
        }
    }
}

/// What happened when a rule's guard ran (or could not), for the audit: never the text.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub guard: String,
    pub rule: String,
    pub on: GuardOn,
    /// The label that hit, or the strongest the guard gave.
    pub label: Option<String>,
    pub score: Option<f64>,
    /// `refused`, `flagged`, `routed`, `passed`, `failed-open`, `failed-closed`, `skipped`
    /// (not sent: a residency or privacy rule forbids it, and the use fails open), or
    /// `not-allowed` (the same, failing closed).
    pub outcome: &'static str,
    /// Why a guard failed or was not called (the operator's log, and the error's message).
    pub why: Option<String>,
    pub ms: u64,
    /// The guard was called while the first attempt ran (not before it).
    pub beside: bool,
    /// What the call cost, in US dollars.
    pub usd: f64,
}

impl Verdict {
    /// Whether this verdict stops the request.
    pub fn stops(&self) -> bool {
        matches!(self.outcome, "refused" | "failed-closed" | "not-allowed")
    }

    /// `guard:outcome`, with the label and score when there is one: the audit header's item.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        self.summary_into(&mut s);
        s
    }

    /// [`Verdict::summary`], written at the end of `s`.
    pub fn summary_into(&self, s: &mut String) {
        s.push_str(&self.guard);
        s.push(':');
        s.push_str(self.outcome);
        if let Some(l) = &self.label {
            s.push(':');
            s.push_str(l);
        }
        if let Some(score) = self.score {
            s.push_str(&format!(":{score:.2}"));
        }
    }

    /// The verdict as a client's error shows it: the log's fields without `detail`.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(VerdictLog {
            detail: None,
            ..self.log()
        })
        .unwrap_or_default()
    }

    /// The verdict as the log line writes it, with why a guard failed or was not called: for
    /// the operator's log only (it may name a secret's variable), never a client's error.
    pub fn log(&self) -> VerdictLog<'_> {
        VerdictLog {
            guard: &self.guard,
            rule: &self.rule,
            on: self.on.name(),
            outcome: self.outcome,
            ms: self.ms,
            beside: self.beside,
            label: self.label.as_deref(),
            score: self.score.map(|s| (s * 1000.0).round() / 1000.0),
            usd: (self.usd > 0.0).then_some(self.usd),
            detail: self.why.as_deref(),
        }
    }
}

/// A verdict in the log line (written straight from the verdict, in this order).
#[derive(Debug, serde::Serialize)]
pub struct VerdictLog<'a> {
    guard: &'a str,
    rule: &'a str,
    on: &'static str,
    outcome: &'static str,
    ms: u64,
    beside: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<&'a str>,
    /// Rounded to three places.
    #[serde(skip_serializing_if = "Option::is_none")]
    score: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usd: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
}

/// What a hit does, as the verdict's outcome.
pub fn outcome_of(action: &GuardAction) -> &'static str {
    match action {
        GuardAction::Refuse => "refused",
        GuardAction::Flag => "flagged",
        GuardAction::Route(_) => "routed",
    }
}

#[cfg(test)]
mod tests;
