//! `cargo bench --bench receipts` (part of ./scripts/bench): what signed receipts add to a
//! request, in one run. First natively: one Ed25519 receipt signed (a chat's claims), timed
//! against rendering the same log line without one. Then through the built component in
//! meridian-host: the p50 latency of a chat whose provider answers at once, without receipts,
//! with a receipt on the response and the log line (two signatures), and on the log line only
//! (`header = false`), rounds interleaved so machine noise hits them alike.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Instant;

use support::{policy_for, Meridian, Mock, Script};

mod common;
use common::pct;

const SIGNING_KEY: &str = "KioqKioqKioqKioqKioqKioqKioqKioqKioqKioqKio";

/// A chat's log line, as the component writes it.
const LINE: &str = r#"{"ts_ms":1765000000000,"request_id":"3f2a9c0e5d7b4a18","method":"POST","path":"/v1/chat/completions","status":200,"policy":"default@1+0123456789ab","tenant":"acme","model":"chat-model","country":"DE","country_source":"header cf-ipcountry","provider":"eu-a","served_model":"chat-model","upstream_model":"mistral-small-latest","jurisdiction":"FR","storage":"FR","retention_days":30,"zdr":false,"rules":["eu-clients"],"candidates":["eu-a","eu-b"],"excluded":["us-b"],"attempts":[{"provider":"eu-a","outcome":"ok","ms":212}],"capabilities":[],"usage":{"prompt_tokens":41,"completion_tokens":187,"total_tokens":228},"cost_usd":0.00039,"duration_ms":214}"#;

fn native() {
    use meridian::receipt;
    let signer = receipt::Signer::from_secret(SIGNING_KEY).unwrap();
    let line: serde_json::Map<String, serde_json::Value> = serde_json::from_str(LINE).unwrap();
    let n = 2000;
    let (mut plain, mut signed) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let t = Instant::now();
        std::hint::black_box(serde_json::to_string(&line).unwrap());
        plain.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        let claims = receipt::claims(&line, true);
        let jws = signer.sign(&claims);
        let mut l = line.clone();
        l.insert("receipt".into(), jws.into());
        std::hint::black_box(serde_json::to_string(&l).unwrap());
        signed.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let (p, s) = (pct(&mut plain, 0.5), pct(&mut signed, 0.5));
    println!(
        "receipts, native: a log line {p:.1} µs, with its receipt signed {s:.1} µs (p50 of {n}): {:+.1} µs, {:.1}×",
        s - p,
        s / p
    );
}

#[tokio::main]
async fn main() {
    native();
    let n: usize = std::env::var("BENCH_RECEIPT_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let provider = Mock::start(Script::ok("answer")).await;
    let receipts = "[settings.receipts]\nkey_secret = \"receipt_signing_key\"\n";
    let cases = [
        ("no receipts", String::new()),
        ("response and log line", receipts.to_string()),
        ("log line only", format!("{receipts}header = false\n")),
    ];
    let mut nodes = Vec::new();
    for (_, extra) in &cases {
        let policy = policy_for(&[("p", &provider, "DE", "")], extra);
        let key = [("SPIN_VARIABLE_RECEIPT_SIGNING_KEY", SIGNING_KEY)];
        nodes.push(Meridian::with_policy(&policy, &key).await);
    }
    let rounds = 10;
    let mut lat =
        support::interleaved_latencies(&nodes.iter().collect::<Vec<_>>(), n, rounds, 10).await;
    let p50: Vec<f64> = lat.iter_mut().map(|l| pct(l, 0.5)).collect();
    println!(
        "receipts through meridian-host ({}): p50 per chat request, provider answering at once ({} requests each, one client):",
        if support::meridian::p3() { "WASI 0.3" } else { "WASI 0.2" },
        n / rounds * rounds
    );
    for (i, (label, _)) in cases.iter().enumerate() {
        if i == 0 {
            println!("  {label:<24} p50 {:.3} ms (baseline)", p50[0]);
        } else {
            println!(
                "  {label:<24} p50 {:.3} ms | added {:+.3} ms ({:.2}×)",
                p50[i],
                p50[i] - p50[0],
                p50[i] / p50[0]
            );
        }
    }
}
