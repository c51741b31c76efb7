//! What scanning a prompt for personal data costs, per KiB of prompt, for a prompt with no
//! findings and one with ten (scanned, then redacted as a `redact` rule does), interleaved with
//! a baseline every request pays anyway: serde_json parsing the same request body.
//!
//! `MERIDIAN_PII_CALLS=N MERIDIAN_PII_CASE=clean|ten` only runs N scans of that case, for an
//! instruction count under callgrind (scripts/bench: the difference between N and 0 calls,
//! divided by N and by the prompt's KiB).

use std::time::Instant;

use meridian::pii::{redact_body, scan_body, Scanner};
use meridian::policy::{KindSet, PiiConfig};
use meridian::routes::Endpoint;

mod common;
use common::pct;

const KIB: usize = 8;

/// About `KIB` KiB of ordinary prose.
fn plain() -> String {
    let sentence = "Could you summarise the main arguments of the essay below, and say which of them you find convincing and why? Keep it short and friendly. ";
    let mut s = String::new();
    while s.len() < KIB * 1024 {
        s.push_str(sentence);
    }
    s.truncate(KIB * 1024);
    s
}

/// About `KIB` KiB of prose dense with what detectors must look at twice: numbers, times,
/// versions, dates, order numbers and code.
fn prose() -> String {
    let sentence = "The release 2.4.1 shipped on 2024-01-15 at 10:30 with 1,234 fixes; see order ORD-2024-000123 and call std::io::copy(&mut a, &mut b) when the ratio is 3:2. ";
    let mut s = String::new();
    while s.len() < KIB * 1024 {
        s.push_str(sentence);
    }
    s.truncate(KIB * 1024);
    s
}

/// The same prose with ten findings of six kinds in place of some of it.
fn with_ten_findings() -> String {
    let values = [
        "jane.doe@example.com",
        "+49 30 12345678",
        "DE89 3704 0044 0532 0130 00",
        "4111 1111 1111 1111",
        "192.168.1.10",
        "bob@example.org",
        "2001:db8::1",
        "020 7946 0958",
        "AB123456C",
        "jane.doe@example.com",
    ];
    let base = prose();
    let step = base.len() / values.len();
    let mut s = String::new();
    for (i, v) in values.iter().enumerate() {
        s.push_str(&base[i * step..(i + 1) * step - v.len() - 2]);
        s.push(' ');
        s.push_str(v);
        s.push(' ');
    }
    s
}

fn body(prompt: &str) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::json!({"model": "m", "messages": [{"role": "user", "content": prompt}]}) {
        serde_json::Value::Object(m) => m,
        _ => unreachable!(),
    }
}

/// `n` distinct e-mail addresses in prose.
fn many_findings(n: usize) -> String {
    (0..n)
        .map(|i| format!("write to user{i}@example.com today. "))
        .collect()
}

/// Scans, redacts and restores a body; returns how many findings were put back.
fn redact_and_restore(
    config: &PiiConfig,
    b: &mut serde_json::Map<String, serde_json::Value>,
    all: KindSet,
    want: usize,
) -> usize {
    let scanner = Scanner::new(config);
    let found = scan_body(&scanner, b, Endpoint::Chat);
    let r = redact_body(&scanner, b, Endpoint::Chat, all);
    assert_eq!(r.pairs.len(), want, "{found:?}");
    let text = b["messages"][0]["content"].as_str().unwrap_or_default();
    let restorer = meridian::pii::Restorer::new(r.pairs);
    restorer.replace_all(text).len()
}

fn main() {
    let config = PiiConfig {
        custom: Default::default(),
        used: true,
    };
    let all = KindSet::all(config.kind_count());
    let mut clean = body(&prose());
    let mut ordinary = body(&plain());
    let mut ten = body(&with_ten_findings());
    let run = |b: &mut serde_json::Map<String, serde_json::Value>, redact: bool| {
        let scanner = Scanner::new(&config);
        let found = scan_body(&scanner, b, Endpoint::Chat);
        if redact && !found.is_empty() {
            let mut copy = b.clone();
            std::hint::black_box(redact_body(&scanner, &mut copy, Endpoint::Chat, all));
        }
        found
    };
    assert!(
        run(&mut clean, false).is_empty(),
        "the dense prompt has findings"
    );
    assert!(
        run(&mut ordinary, false).is_empty(),
        "the plain prompt has findings"
    );
    let found = run(&mut ten, false);
    assert_eq!(
        found.counts.iter().map(|(_, n)| n).sum::<u32>(),
        10,
        "{found:?}"
    );

    // `MERIDIAN_PII_CASE=findings-N`: a prompt with N distinct e-mail addresses, scanned,
    // redacted and restored `MERIDIAN_PII_CALLS` times (0: the prompt is only built), for
    // scripts/bench's instruction counts at 1,000, 10,000 and 100,000 findings.
    if let Some(n) = std::env::var("MERIDIAN_PII_CASE").ok().and_then(|c| {
        c.strip_prefix("findings-")
            .and_then(|n| n.parse::<usize>().ok())
    }) {
        let calls = std::env::var("MERIDIAN_PII_CALLS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(1);
        let mut b = body(&many_findings(n));
        for _ in 0..calls {
            std::hint::black_box(redact_and_restore(&config, &mut b.clone(), all, n));
        }
        std::hint::black_box(&mut b);
        return;
    }

    if let Some(n) = std::env::var("MERIDIAN_PII_CALLS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        let which = std::env::var("MERIDIAN_PII_CASE").unwrap_or_default();
        let (b, redact) = match which.as_str() {
            "ten" => (&mut ten, true),
            "plain" => (&mut ordinary, false),
            _ => (&mut clean, false),
        };
        for _ in 0..n {
            std::hint::black_box(run(std::hint::black_box(b), redact));
        }
        return;
    }

    let raw_clean = serde_json::to_vec(&clean).unwrap();
    let (mut scan_c, mut scan_t, mut scan_p, mut base) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..200 {
        let t = Instant::now();
        for _ in 0..8 {
            std::hint::black_box(run(&mut ordinary, false));
        }
        scan_p.push(t.elapsed().as_secs_f64() * 1e6 / 8.0);
        let t = Instant::now();
        for _ in 0..8 {
            std::hint::black_box(run(&mut clean, false));
        }
        scan_c.push(t.elapsed().as_secs_f64() * 1e6 / 8.0);
        let t = Instant::now();
        for _ in 0..8 {
            std::hint::black_box(run(&mut ten, true));
        }
        scan_t.push(t.elapsed().as_secs_f64() * 1e6 / 8.0);
        let t = Instant::now();
        for _ in 0..8 {
            std::hint::black_box(
                serde_json::from_slice::<serde_json::Value>(std::hint::black_box(&raw_clean))
                    .unwrap(),
            );
        }
        base.push(t.elapsed().as_secs_f64() * 1e6 / 8.0);
    }
    let (p, c, t, b) = (
        pct(&mut scan_p, 0.5),
        pct(&mut scan_c, 0.5),
        pct(&mut scan_t, 0.5),
        pct(&mut base, 0.5),
    );
    println!(
        "personal-data scan of a {KIB} KiB prompt (medians): plain prose {p:.1} µs ({:.2}× the baseline), prose dense with numbers {c:.1} µs ({:.2}×), ten findings scanned and redacted {t:.1} µs ({:.2}×) | baseline, serde_json parse of the {} byte body: {b:.1} µs",
        p / b,
        c / b,
        t / b,
        raw_clean.len()
    );

    // Redaction and restoring against the number of findings: the time per finding stays flat
    // when both are linear.
    let mut per = Vec::new();
    for n in [1_000usize, 10_000, 100_000] {
        let b = body(&many_findings(n));
        let t = Instant::now();
        std::hint::black_box(redact_and_restore(&config, &mut b.clone(), all, n));
        let us = t.elapsed().as_secs_f64() * 1e6;
        per.push((n, us / n as f64));
    }
    println!(
        "scan + redact + restore, per finding: {}; 100,000 against 1,000: {:.2}×",
        per.iter()
            .map(|(n, us)| format!("{n} findings {us:.2} µs"))
            .collect::<Vec<_>>()
            .join(", "),
        per[2].1 / per[0].1
    );
}
