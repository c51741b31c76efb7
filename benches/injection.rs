//! The built-in injection detector against its corpus (tests/fixtures/injection/corpus.jsonl):
//! precision, recall and F1, what each signature class finds, and what it costs per KiB of a
//! benign prompt against a baseline every request pays anyway (serde_json parsing the same
//! text as a request body), interleaved in one run.

use std::time::Instant;

use meridian::guard::builtin;

const CORPUS: &str = include_str!("../tests/fixtures/injection/corpus.jsonl");

/// A benign prompt of `n` bytes.
fn benign(n: usize) -> String {
    let sentence = "Could you summarise the main arguments of the essay below, and say which of them you find convincing and why? Keep it short and friendly. ";
    let mut prompt = String::new();
    while prompt.len() < n {
        prompt.push_str(sentence);
    }
    prompt.truncate(n);
    prompt
}

fn main() {
    // `MERIDIAN_INJECTION_CALLS=N`: only N scans of a 4 KiB benign prompt, for an instruction
    // count under callgrind (scripts/bench: the difference between N and 0 calls, per KiB).
    if let Some(calls) = std::env::var("MERIDIAN_INJECTION_CALLS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        let prompt = benign(4096);
        for _ in 0..calls {
            std::hint::black_box(builtin::scan(std::hint::black_box(&prompt)));
        }
        return;
    }
    let cases: Vec<serde_json::Value> = CORPUS
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("a corpus line is JSON"))
        .collect();
    let (mut tp, mut fp, mut tn, mut fn_) = (0u32, 0u32, 0u32, 0u32);
    let mut by_class: std::collections::BTreeMap<String, (u32, u32)> = Default::default();
    let mut missed = Vec::new();
    let mut false_alarms = Vec::new();
    for c in &cases {
        let text = c["text"].as_str().unwrap_or_default();
        let indirect = c["where"] == "tool";
        let mut d = builtin::Detector::new();
        d.scan(text, indirect);
        let found = d.finding().is_some();
        let truth = c["injection"].as_bool().unwrap_or(false);
        match (truth, found) {
            (true, true) => tp += 1,
            (true, false) => {
                fn_ += 1;
                missed.push(text.chars().take(70).collect::<String>());
            }
            (false, true) => {
                fp += 1;
                false_alarms.push(text.chars().take(70).collect::<String>());
            }
            (false, false) => tn += 1,
        }
        if truth {
            let class = c["signature"].as_str().unwrap_or("?").to_string();
            let e = by_class.entry(class).or_default();
            e.0 += 1;
            e.1 += u32::from(found);
        }
    }
    let precision = f64::from(tp) / f64::from((tp + fp).max(1));
    let recall = f64::from(tp) / f64::from((tp + fn_).max(1));
    let f1 = 2.0 * precision * recall / (precision + recall).max(f64::MIN_POSITIVE);
    println!(
        "injection corpus: {} cases ({} attacks, {} benign)",
        cases.len(),
        tp + fn_,
        tn + fp
    );
    println!("  precision {precision:.3}  recall {recall:.3}  F1 {f1:.3}  (TP {tp}, FP {fp}, TN {tn}, FN {fn_})");
    for (class, (n, found)) in &by_class {
        println!("  {class:<13} found {found} of {n}");
    }
    for m in &missed {
        println!("  missed: {m}");
    }
    for m in &false_alarms {
        println!("  false alarm: {m}");
    }

    // Cost: a 4 KiB benign prompt, against parsing the same prompt as a JSON body.
    let prompt = benign(4096);
    let body = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": prompt}]})
        .to_string();
    let rounds = 2_000;
    let (mut scan_ns, mut parse_ns) = (0u128, 0u128);
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..rounds {
            std::hint::black_box(builtin::scan(std::hint::black_box(&prompt)));
        }
        scan_ns += t.elapsed().as_nanos();
        let t = Instant::now();
        for _ in 0..rounds {
            let v: serde_json::Value = serde_json::from_str(std::hint::black_box(&body)).unwrap();
            std::hint::black_box(v);
        }
        parse_ns += t.elapsed().as_nanos();
    }
    let per = |ns: u128| ns as f64 / f64::from(5 * rounds) / 1000.0;
    println!(
        "4 KiB benign prompt: scan {:.2} µs, parse the same body {:.2} µs (scan = {:.2}× parse)",
        per(scan_ns),
        per(parse_ns),
        scan_ns as f64 / parse_ns as f64
    );
}
