//! Running the guards a decision names: each allowed guard asked (the built-in detector's
//! finding read from the facts), each excluded one recorded, every call bounded by its rule's
//! timeout, and what the verdicts do to the request ([`Stop`]).

use std::borrow::Cow;

use serde_json::{json, Map, Value};

use crate::decide::GuardStep;
use crate::error::ApiError;
use crate::guard::{self, Label, Verdict};
use crate::policy::{Guard, GuardAction, GuardOn, GuardUse};
use crate::request::Endpoint;
use crate::transport::{next_within, Failure, Transport, Waits};

/// What the verdicts do to a request.
pub(super) enum Stop {
    /// Refused: the error the client gets.
    Refuse(ApiError),
    /// Served by this `[[routes]]` instead.
    Route(String),
}

/// One guard a rule runs, ready to be asked: borrowed from the policy while the request is
/// handled, owned ([`Ask::into_owned`]) where a stream keeps it while it is pumped.
#[derive(Clone)]
pub(crate) struct Ask<'p> {
    pub guard: Cow<'p, Guard>,
    pub usage: Cow<'p, GuardUse>,
    pub rule: Cow<'p, str>,
    /// Why the text may not be sent to it (the decision's reasons), when it may not.
    pub excluded: Option<String>,
    /// The operator's key for it, or why it is missing.
    pub key: Result<Option<String>, String>,
}

impl<'p> Ask<'p> {
    /// Whether judging needs a call to the guard's service.
    fn called(&self) -> bool {
        !self.guard.is_builtin() && self.excluded.is_none()
    }

    /// The same guard, owned: what a stream keeps.
    pub(crate) fn into_owned(self) -> Ask<'static> {
        Ask {
            guard: Cow::Owned(self.guard.into_owned()),
            usage: Cow::Owned(self.usage.into_owned()),
            rule: Cow::Owned(self.rule.into_owned()),
            excluded: self.excluded,
            key: self.key,
        }
    }

    pub(super) fn of(step: &GuardStep<'p>, secret: &dyn Fn(&str) -> Option<String>) -> Ask<'p> {
        let g = step.guard;
        let excluded = (!step.allowed()).then(|| {
            let why: Vec<String> = step.excluded.iter().map(|r| r.to_string()).collect();
            format!(
                "guard `{}` processes data in `{}`, where this request's text may not go: {}",
                g.id,
                g.location,
                why.join("; ")
            )
        });
        let key = match &g.key_secret {
            None => Ok(None),
            Some(name) => secret(name)
                .filter(|k| !k.is_empty())
                .map(Some)
                .ok_or_else(|| {
                    format!("its key is not set: give the Spin variable `{name}` a value")
                }),
        };
        Ask {
            guard: Cow::Borrowed(g),
            usage: Cow::Borrowed(step.usage),
            rule: Cow::Borrowed(&step.rule.0),
            excluded,
            key,
        }
    }
}

/// The text the guards of a request are sent: every text the model reads, in the order the
/// walk finds it (after redaction: a guard sees what a provider sees), a blank line between.
pub(super) fn input_text(endpoint: Endpoint, body: &mut Map<String, Value>) -> String {
    let mut out = String::new();
    crate::request::texts(endpoint, body, &mut |_, t| {
        if !out.is_empty() {
            out.push_str("\n\n");
        }
        out.push_str(t);
    });
    out
}

/// Runs `asks` together on `text` and gives their verdicts in their order.
/// `builtin`: the built-in detector's finding on this text, when it was read already.
pub(crate) async fn run<T: Transport>(
    t: &T,
    asks: &[Ask<'_>],
    text: &str,
    builtin: Option<Option<guard::builtin::Finding>>,
    beside: bool,
) -> Vec<Verdict> {
    // Guards that are not called (the built-in detector, one the text may not go to) answer at
    // once: when none is called, nothing waits and no future is polled.
    if asks.iter().all(|a| !a.called()) {
        return asks
            .iter()
            .map(|a| match at_once(a, text, builtin, beside) {
                Judged::Now(v) | Judged::Call(v) => v,
            })
            .collect();
    }
    let calls = asks.iter().map(|a| one(t, a, text, builtin, beside));
    futures::future::join_all(calls).await
}

/// A guard's verdict as far as it goes without calling it.
enum Judged {
    /// The guard is not called: this is its verdict.
    Now(Verdict),
    /// What a call to it completes.
    Call(Verdict),
}

fn at_once(
    ask: &Ask<'_>,
    text: &str,
    builtin: Option<Option<guard::builtin::Finding>>,
    beside: bool,
) -> Judged {
    let (g, u) = (&ask.guard, &ask.usage);
    let mut v = Verdict {
        guard: g.id.to_string(),
        rule: ask.rule.to_string(),
        on: u.on,
        label: None,
        score: None,
        outcome: "passed",
        why: None,
        ms: 0,
        beside,
        usd: 0.0,
    };
    if g.is_builtin() {
        let finding = builtin.unwrap_or_else(|| guard::builtin::scan(text));
        let labels: Vec<Label> = finding
            .map(|f| Label {
                name: f.signature.to_string(),
                score: f.score,
                flagged: true,
            })
            .into_iter()
            .collect();
        settle(&mut v, ask, Ok(labels));
        Judged::Now(v)
    } else if let Some(why) = &ask.excluded {
        v.why = Some(why.clone());
        v.outcome = if u.fail_open {
            "skipped"
        } else {
            "not-allowed"
        };
        Judged::Now(v)
    } else {
        Judged::Call(v)
    }
}

async fn one<T: Transport>(
    t: &T,
    ask: &Ask<'_>,
    text: &str,
    builtin: Option<Option<guard::builtin::Finding>>,
    beside: bool,
) -> Verdict {
    let mut v = match at_once(ask, text, builtin, beside) {
        Judged::Now(v) => return v,
        Judged::Call(v) => v,
    };
    let started = t.now_ms();
    let labels = call(t, ask, text).await;
    v.ms = t.now_ms().saturating_sub(started);
    v.usd = ask.guard.price_per_call.unwrap_or(0.0);
    settle(&mut v, ask, labels);
    v
}

/// What a guard's labels (or why it gave none) make of its verdict.
fn settle(v: &mut Verdict, ask: &Ask<'_>, labels: Result<Vec<Label>, String>) {
    let (g, u) = (&ask.guard, &ask.usage);
    match labels {
        Err(why) => {
            v.why = Some(why);
            v.outcome = if u.fail_open {
                "failed-open"
            } else {
                "failed-closed"
            };
        }
        Ok(labels) => match guard::hit(g, u, &labels) {
            Some(l) => {
                v.label = Some(l.name.clone());
                v.score = Some(l.score);
                v.outcome = guard::outcome_of(&u.action);
            }
            None => {
                if let Some(top) = labels.iter().max_by(|a, b| a.score.total_cmp(&b.score)) {
                    v.label = Some(top.name.clone());
                    v.score = Some(top.score);
                }
            }
        },
    }
}

/// One call to an external guard, within its rule's timeout: its labels, or why not.
async fn call<T: Transport>(t: &T, ask: &Ask<'_>, text: &str) -> Result<Vec<Label>, String> {
    let (g, u) = (&ask.guard, &ask.usage);
    if text.len() > g.max_input_bytes as usize {
        return Err(format!(
            "the text ({} bytes) is longer than the guard's `max_input_bytes` ({})",
            text.len(),
            g.max_input_bytes
        ));
    }
    let key = ask.key.clone()?;
    let req = guard::request(g, key.as_deref(), text, u.on);
    let start = t.now_ms();
    let deadline = start.saturating_add(u.timeout_ms);
    let mut resp = t.send(req, u.timeout_ms).await.map_err(|f| failure(&f))?;
    let mut body = Vec::new();
    let mut waits = Waits::new(deadline, u.timeout_ms);
    loop {
        let Some(wait) = waits.next(|| t.now_ms()) else {
            return Err("timeout".into());
        };
        match next_within(|| t.now_ms(), &mut resp.body, wait, waits.read_ms()).await {
            None => break,
            Some(Err(f)) => return Err(failure(&f)),
            Some(Ok(c)) => {
                if body.len() + c.len() > guard::MAX_ANSWER_BYTES {
                    return Err("the answer is larger than 1 MiB".into());
                }
                body.extend_from_slice(&c);
            }
        }
    }
    if !(200..300).contains(&resp.status) {
        return Err(format!("status {}", resp.status));
    }
    guard::labels(g, &body)
}

fn failure(f: &Failure) -> String {
    match f {
        Failure::Timeout(_) => "timeout".into(),
        other => other.detail().unwrap_or_else(|| other.label()),
    }
}

/// What the verdicts do: the first that stops the request (a refusal, a guard failing closed,
/// or one the text may not be sent to), else the first that routes.
pub(crate) fn consequence(
    asks: &[Ask<'_>],
    verdicts: &[Verdict],
    request_id: &str,
) -> Option<Stop> {
    for v in verdicts {
        if !v.stops() {
            continue;
        }
        let details = json!({ "request_id": request_id, "guards": verdicts.iter().map(Verdict::to_json).collect::<Vec<_>>() });
        let on = match v.on {
            GuardOn::Input => "request",
            GuardOn::Output => "answer",
        };
        let e = match v.outcome {
            "refused" => ApiError::new(
                422,
                "guardrail_refused",
                format!(
                    "The {on} was refused by guard `{}` (rule `{}`): it was judged `{}`.",
                    v.guard,
                    v.rule,
                    v.label.as_deref().unwrap_or("unsafe")
                ),
            ),
            "not-allowed" => ApiError::new(
                403,
                "guardrail_not_allowed",
                format!(
                    "Rule `{}` requires guard `{}` to judge this {on}, but the policy does not allow sending it there ({}), and the rule fails closed.",
                    v.rule,
                    v.guard,
                    v.why.as_deref().unwrap_or("excluded")
                ),
            ),
            _ => ApiError::new(
                503,
                "guardrail_unavailable",
                format!(
                    "Guard `{}` (rule `{}`) could not judge this {on} and the rule fails closed: try again later.",
                    v.guard, v.rule
                ),
            ),
        };
        return Some(Stop::Refuse(e.with_details(details)));
    }
    asks.iter()
        .zip(verdicts)
        .find_map(|(a, v)| match (&a.usage.action, v.outcome) {
            (GuardAction::Route(r), "routed") => Some(Stop::Route(r.to_string())),
            _ => None,
        })
}

/// A stream's output guards: its text judged in windows of [`guard::OUTPUT_WINDOW_CHARS`] characters
/// (each sent with the last [`WINDOW_OVERLAP_CHARS`] of the window before, so a phrase cut by
/// a window's edge is seen whole) and at its end; the client's bytes are held until the window
/// their text belongs to is cleared.
pub struct Windows {
    asks: Vec<Ask<'static>>,
    /// The text of the window being filled (after the overlap of the one before).
    text: String,
    /// Characters of `text` that are new in this window.
    fresh: usize,
    held: Vec<u8>,
    /// One verdict per guard, over every window so far.
    verdicts: Vec<Verdict>,
    request_id: String,
}

/// The most client bytes held for one window: past this the window is judged as it is.
const MAX_HELD_BYTES: usize = 64 * 1024;

/// Characters of the window before that each window is sent with.
pub const WINDOW_OVERLAP_CHARS: usize = 128;

/// How much a verdict's outcome says, to keep the strongest over a stream's windows.
fn weight(outcome: &str) -> u8 {
    match outcome {
        "refused" | "failed-closed" | "not-allowed" => 4,
        "flagged" => 3,
        "failed-open" => 2,
        "skipped" => 1,
        _ => 0,
    }
}

impl Windows {
    pub(crate) fn new(asks: Vec<Ask<'_>>, request_id: &str) -> Windows {
        let asks = asks.into_iter().map(Ask::into_owned).collect();
        Windows {
            asks,
            text: String::new(),
            fresh: 0,
            held: Vec::new(),
            verdicts: Vec::new(),
            request_id: request_id.to_string(),
        }
    }

    /// Reads the text of checked provider lines (before anything is restored: a guard sees
    /// what the provider wrote).
    pub fn read(&mut self, lines: &[u8]) {
        let before = self.text.len();
        guard::stream_text(lines, &mut self.text);
        self.fresh += self.text[before..].chars().count();
    }

    /// Holds the client's bytes until their window is cleared.
    pub fn hold(&mut self, bytes: Vec<u8>) {
        self.held.extend(bytes);
    }

    /// Whether the window is full: its text, or the client's bytes held for it (events with
    /// little text, such as tool calls' names or usage, still fill a window).
    pub fn full(&self) -> bool {
        self.fresh >= guard::OUTPUT_WINDOW_CHARS || self.held.len() >= MAX_HELD_BYTES
    }

    /// Judges the window: the bytes held so far when every guard lets it through, else the
    /// message of the error event that ends the stream.
    pub async fn judge<T: Transport>(&mut self, t: &T) -> Result<Vec<u8>, String> {
        if self.fresh > 0 {
            let verdicts = run(t, &self.asks, &self.text, None, false).await;
            let stop = consequence(&self.asks, &verdicts, &self.request_id);
            self.merge(verdicts);
            if let Some(Stop::Refuse(e)) = stop {
                self.held.clear();
                return Err(e.message);
            }
            let keep = self
                .text
                .char_indices()
                .rev()
                .nth(WINDOW_OVERLAP_CHARS.saturating_sub(1))
                .map_or(0, |(i, _)| i);
            self.text.drain(..keep);
            self.fresh = 0;
        }
        Ok(std::mem::take(&mut self.held))
    }

    fn merge(&mut self, verdicts: Vec<Verdict>) {
        if self.verdicts.is_empty() {
            self.verdicts = verdicts;
            return;
        }
        for (kept, v) in self.verdicts.iter_mut().zip(verdicts) {
            let (ms, usd) = (kept.ms + v.ms, kept.usd + v.usd);
            if weight(v.outcome) > weight(kept.outcome)
                || (weight(v.outcome) == weight(kept.outcome) && v.score > kept.score)
            {
                *kept = v;
            }
            kept.ms = ms;
            kept.usd = usd;
        }
    }

    /// Each guard's strongest verdict over the stream, with the time and cost of every window.
    pub fn verdicts(&self) -> &[Verdict] {
        &self.verdicts
    }
}
