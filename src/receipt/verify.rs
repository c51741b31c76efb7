//! `meridian verify`: checks a log's lines against their receipts and the receipts against the
//! keys, and what the receipts' numbering shows about lines removed or moved.
//!
//! What each deployment lets it find is in docs/evidence.md: an edited line or receipt always;
//! a removed line or two lines swapped when the receipts are numbered by the store's sequence
//! (`sequence = "store"`) or chained within an instance (an instance that serves many requests,
//! as a WASI 0.3 instance does); never lines cut from the log's start or end.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::{differences, digest, Invalid, KeySet};

/// One thing wrong with a log, at a line (1-based).
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub line: usize,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// Not a JSON object.
    NotJson,
    /// A request's closing line without a receipt.
    NoReceipt,
    /// The receipt itself does not verify.
    Invalid(Invalid),
    /// The line says something else than its receipt, in these fields.
    Altered(Vec<String>),
    /// Two lines carry the same sequence number (a line copied).
    Duplicate { seq: i64, first: usize },
    /// Sequence numbers missing before this line: a line removed (or a request whose instance
    /// ended before it wrote its line).
    SeqGap { from: i64, to: i64, after: usize },
    /// This line's number is lower than a line's before it: lines moved.
    SeqOrder {
        seq: i64,
        after: usize,
        after_seq: i64,
    },
    /// Links of an instance's chain missing before this line.
    ChainGap {
        instance: String,
        from: u64,
        to: u64,
        after: usize,
    },
    /// This line comes before a line of its instance it followed: lines moved.
    ChainOrder {
        instance: String,
        n: u64,
        after: usize,
        after_n: u64,
    },
    /// The line before it in its instance's chain is not the one its receipt names.
    ChainBroken { instance: String, n: u64 },
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: ", self.line)?;
        match &self.kind {
            Kind::NotJson => f.write_str("not a JSON log line"),
            Kind::NoReceipt => f.write_str("no receipt"),
            Kind::Invalid(i) => write!(f, "{i}"),
            Kind::Altered(fields) => write!(
                f,
                "differs from its receipt in {}: the line was edited",
                fields.join(", ")
            ),
            Kind::Duplicate { seq, first } => {
                write!(f, "sequence number {seq} again (first on line {first}): a line copied")
            }
            Kind::SeqGap { from, to, after } => {
                if from == to {
                    write!(f, "sequence number {from} is missing between line {after} and this one: a line removed")
                } else {
                    write!(f, "sequence numbers {from} to {to} are missing between line {after} and this one: lines removed")
                }
            }
            Kind::SeqOrder { seq, after, after_seq } => write!(
                f,
                "sequence number {seq} comes after line {after}'s {after_seq}: lines moved"
            ),
            Kind::ChainGap {
                instance,
                from,
                to,
                after,
            } => {
                if from == to {
                    write!(f, "instance {instance}'s link {from} is missing between line {after} and this one: a line removed")
                } else {
                    write!(f, "instance {instance}'s links {from} to {to} are missing between line {after} and this one: lines removed")
                }
            }
            Kind::ChainOrder {
                instance,
                n,
                after,
                after_n,
            } => write!(
                f,
                "instance {instance}'s link {n} comes after line {after}'s link {after_n}: lines moved"
            ),
            Kind::ChainBroken { instance, n } => write!(
                f,
                "instance {instance}'s link {n} does not name the line before it in its chain: a line replaced"
            ),
        }
    }
}

/// What `verify_log` found.
#[derive(Debug, Default)]
pub struct LogReport {
    /// Requests' closing lines read (a stream's opening line has no receipt of its own).
    pub lines: usize,
    /// Those whose receipt verified and matched the line.
    pub verified: usize,
    /// Lines numbered by the store's sequence, and chained within an instance of more than one.
    pub sequenced: usize,
    pub chained: usize,
    pub findings: Vec<Finding>,
}

struct Link {
    line: usize,
    n: u64,
    prev: Option<String>,
    digest: String,
}

/// Checks every line of a log (JSON lines, as Meridian writes them) against its receipt.
pub fn verify_log(text: &str, keys: &KeySet) -> LogReport {
    let mut r = LogReport::default();
    let mut seqs: Vec<(usize, i64)> = Vec::new();
    let mut chains: BTreeMap<String, Vec<Link>> = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let mut find = |kind| {
            r.findings.push(Finding {
                line: line_no,
                kind,
            })
        };
        let Ok(Value::Object(line)) = serde_json::from_str::<Value>(raw) else {
            find(Kind::NotJson);
            continue;
        };
        if line.get("event").and_then(Value::as_str) == Some("stream_open") {
            continue;
        }
        r.lines += 1;
        let Some(jws) = line.get("receipt").and_then(Value::as_str) else {
            find(Kind::NoReceipt);
            continue;
        };
        let claims = match keys.verify(jws) {
            Ok(c) => c,
            Err(e) => {
                find(Kind::Invalid(e));
                continue;
            }
        };
        let changed = differences(&line, &claims);
        if changed.is_empty() {
            r.verified += 1;
        } else {
            find(Kind::Altered(changed));
        }
        if let Some(n) = claims.get("seq").and_then(Value::as_i64) {
            seqs.push((line_no, n));
        }
        if let Some(link) = chain_of(&claims) {
            chains.entry(link.0).or_default().push(Link {
                line: line_no,
                n: link.1,
                prev: link.2,
                digest: digest(jws),
            });
        }
    }
    r.sequenced = seqs.len();
    check_sequence(&seqs, &mut r.findings);
    for (instance, links) in &chains {
        if links.len() > 1 {
            r.chained += links.len();
        }
        check_chain(instance, links, &mut r.findings);
    }
    r.findings.sort_by_key(|f| f.line);
    r
}

fn chain_of(claims: &Map<String, Value>) -> Option<(String, u64, Option<String>)> {
    let c = claims.get("chain")?;
    Some((
        c.get("instance")?.as_str()?.to_string(),
        c.get("n")?.as_u64()?,
        c.get("prev").and_then(Value::as_str).map(str::to_string),
    ))
}

fn check_sequence(seqs: &[(usize, i64)], out: &mut Vec<Finding>) {
    // Moved: a number lower than the highest before it.
    let mut top: Option<(usize, i64)> = None;
    for &(line, n) in seqs {
        match top {
            Some((at, m)) if n < m => out.push(Finding {
                line,
                kind: Kind::SeqOrder {
                    seq: n,
                    after: at,
                    after_seq: m,
                },
            }),
            _ => top = Some((line, n)),
        }
    }
    // Removed or copied: the numbers in order.
    let mut sorted = seqs.to_vec();
    sorted.sort_by_key(|&(line, n)| (n, line));
    for w in sorted.windows(2) {
        let ((l0, a), (l1, b)) = (w[0], w[1]);
        if a == b {
            out.push(Finding {
                line: l1,
                kind: Kind::Duplicate { seq: b, first: l0 },
            });
        } else if b > a + 1 {
            out.push(Finding {
                line: l1,
                kind: Kind::SeqGap {
                    from: a + 1,
                    to: b - 1,
                    after: l0,
                },
            });
        }
    }
}

fn check_chain(instance: &str, links: &[Link], out: &mut Vec<Finding>) {
    let mut top: Option<(usize, u64)> = None;
    for l in links {
        match top {
            Some((at, m)) if l.n < m => out.push(Finding {
                line: l.line,
                kind: Kind::ChainOrder {
                    instance: instance.to_string(),
                    n: l.n,
                    after: at,
                    after_n: m,
                },
            }),
            _ => top = Some((l.line, l.n)),
        }
    }
    let mut sorted: Vec<&Link> = links.iter().collect();
    sorted.sort_by_key(|l| (l.n, l.line));
    for w in sorted.windows(2) {
        let (a, b) = (w[0], w[1]);
        if b.n > a.n + 1 {
            out.push(Finding {
                line: b.line,
                kind: Kind::ChainGap {
                    instance: instance.to_string(),
                    from: a.n + 1,
                    to: b.n - 1,
                    after: a.line,
                },
            });
        } else if b.n == a.n + 1 && b.prev.as_deref() != Some(a.digest.as_str()) {
            out.push(Finding {
                line: b.line,
                kind: Kind::ChainBroken {
                    instance: instance.to_string(),
                    n: b.n,
                },
            });
        }
    }
}
