//! `cargo bench --bench gateway` (or ./scripts/bench): prints figures; it checks only that every
//! request succeeds and that a successful request never touches a fallback.
//!
//! 1. Added latency: the same mock upstream called directly and through Meridian (the built
//!    component in meridian-host), 1 client and 32 clients, p50/p99, in one run.
//! 2. CPU per request: each host process's user+system time over its runs, per request.
//! 3. References in the same host and run (benches/floor): an empty component (the host's own
//!    cost) and a component that only forwards to the same engine (the least any forwarding
//!    component costs), so Meridian's own share is the difference.
//!
//! The pure decision and policy loading are in `cargo bench --bench decide`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::{policy_for, Meridian, Mock, Script};

mod common;
use common::pct;

/// One request shape: where it goes and the extra headers it carries.
#[derive(Clone)]
struct Target {
    label: &'static str,
    url: String,
    headers: Vec<(&'static str, &'static str)>,
    model: &'static str,
    /// The meridian-host process serving it (None: the upstream called directly).
    pid: Option<u32>,
}

async fn run(t: &Target, clients: usize, per_client: usize) -> Vec<f64> {
    let body = format!(
        r#"{{"model":"{}","messages":[{{"role":"user","content":"hi"}}]}}"#,
        t.model
    );
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (t, body) = (t.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let c = reqwest::Client::new();
            let mut lat = Vec::with_capacity(per_client);
            for _ in 0..per_client {
                let start = Instant::now();
                let mut rb = c
                    .post(&t.url)
                    .header("content-type", "application/json")
                    .body(body.clone());
                for (k, v) in &t.headers {
                    rb = rb.header(*k, *v);
                }
                let r = rb.send().await.unwrap();
                assert_eq!(r.status(), 200, "{}", t.label);
                r.bytes().await.unwrap();
                lat.push(start.elapsed().as_secs_f64() * 1000.0);
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

struct Stats {
    p50: f64,
    p99: f64,
    /// CPU of the serving host process per request, µs.
    cpu_us: Option<f64>,
}

/// Interleaves rounds of every target (1 client) so machine noise hits them alike.
async fn measure_interleaved(targets: &[Target], n: usize) -> Vec<Stats> {
    let rounds = 5;
    let mut lat: Vec<Vec<f64>> = vec![Vec::new(); targets.len()];
    let mut ticks = vec![0u64; targets.len()];
    for _ in 0..rounds {
        for (i, t) in targets.iter().enumerate() {
            let before = t.pid.and_then(cpu_ticks);
            lat[i].extend(run(t, 1, n / rounds).await);
            if let (Some(b), Some(a)) = (before, t.pid.and_then(cpu_ticks)) {
                ticks[i] += a - b;
            }
        }
    }
    let per_req_us = |t: u64| t as f64 / 100.0 * 1e6 / (n / rounds * rounds) as f64; // USER_HZ = 100
    lat.iter_mut()
        .zip(targets)
        .zip(ticks)
        .map(|((l, t), k)| Stats {
            p50: pct(l, 0.5),
            p99: pct(l, 0.99),
            cpu_us: t.pid.map(|_| per_req_us(k)),
        })
        .collect()
}

fn report(targets: &[Target], stats: &[Stats]) {
    let base = &stats[0];
    for (t, s) in targets.iter().zip(stats) {
        let cpu = s
            .cpu_us
            .map_or(String::new(), |c| format!(", host CPU {c:.0} µs/request"));
        if t.pid.is_none() {
            println!(
                "  {:<44} p50 {:.3} ms  p99 {:.3} ms (baseline)",
                t.label, s.p50, s.p99
            );
        } else {
            println!(
                "  {:<44} p50 {:.3} ms  p99 {:.3} ms | added p50 {:.3} ms, p99 {:.3} ms ({:.2}× baseline p50){cpu}",
                t.label,
                s.p50,
                s.p99,
                s.p50 - base.p50,
                s.p99 - base.p99,
                s.p50 / base.p50
            );
        }
    }
}

#[tokio::main]
async fn main() {
    let n = std::env::var("BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000usize);

    // The shipped artifact on its embedded (compiled) default policy: `local-only` traffic goes
    // to the self-hosted engine at 127.0.0.1:11434, which this mock plays.
    let Some(local) = Mock::start_at("127.0.0.1:11434", Script::ok("benchmark answer")).await
    else {
        eprintln!("127.0.0.1:11434 is taken (an Ollama?): stop it and run the benchmark again");
        std::process::exit(1);
    };
    let embedded = Meridian::default_policy(&[]).await;
    // References in the same host: benches/floor (scripts/bench builds it) answers `/empty` at
    // once and forwards chat requests to the same engine without doing anything else.
    let floor_wasm =
        support::meridian::root().join("target/wasm32-wasip2/release/meridian_floor.wasm");
    if !floor_wasm.exists() {
        eprintln!(
            "{} is missing: run ./scripts/bench, which builds it",
            floor_wasm.display()
        );
        std::process::exit(1);
    }
    let floor = Meridian::other_component(&floor_wasm).await;
    // The same upstream through policies given as the `policy` variable (TOML parsed per
    // request): a plain plan, and one with the whole resilience machinery armed (3 candidates,
    // retries with backoff, hedging, Retry-After, deadline) that a successful request never trips.
    let up = Mock::start(Script::ok("benchmark answer")).await;
    let down = Mock::start(Script::status(503)).await;
    // Both policies have the same catalog and order; only the plan differs.
    let providers = [
        ("alpha", &up, "DE", ""),
        ("beta", &down, "DE", ""),
        ("gamma", &down, "DE", ""),
    ];
    let rule = "[[rules]]\nid = \"r\"\nprefer = { order = [\"alpha\", \"beta\", \"gamma\"] }\n";
    let plain = Meridian::with_policy(&policy_for(&providers, rule), &[]).await;
    let armed = Meridian::with_policy(
        &policy_for(
            &providers,
            &format!("{rule}plan = {{ retries = 2, backoff_ms = 50, hedge_after_ms = 2000, deadline_ms = 10000, attempt_timeout_ms = 5000 }}\n"),
        ),
        &[],
    )
    .await;

    let direct = Target {
        label: "direct to the mock upstream",
        url: format!("{}/v1/chat/completions", up.url()),
        headers: vec![],
        model: "chat-model",
        pid: None,
    };
    let empty = Target {
        label: "reference: empty component (host floor)",
        url: floor.at("/empty"),
        headers: vec![],
        model: "llama-3.1-8b",
        pid: floor.pid(),
    };
    let proxy = Target {
        label: "reference: bare forwarding component",
        url: floor.at("/v1/chat/completions"),
        headers: vec![],
        model: "llama-3.1-8b",
        pid: floor.pid(),
    };
    let via_embedded = Target {
        label: "Meridian, embedded compiled policy",
        url: embedded.at("/v1/chat/completions"),
        headers: vec![("x-meridian-privacy", "local-only")],
        model: "llama-3.1-8b",
        pid: embedded.pid(),
    };
    let via_plain = Target {
        label: "Meridian, policy variable (TOML/request)",
        url: plain.at("/v1/chat/completions"),
        headers: vec![],
        model: "chat-model",
        pid: plain.pid(),
    };
    let via_armed = Target {
        label: "Meridian, variable + retries/hedge/fallbacks",
        url: armed.at("/v1/chat/completions"),
        headers: vec![],
        model: "chat-model",
        pid: armed.pid(),
    };
    let targets = [
        direct.clone(),
        empty,
        proxy,
        via_embedded.clone(),
        via_plain,
        via_armed,
    ];

    // Warm up every path (connection pools, wasmtime code).
    for t in &targets {
        run(t, 1, 50).await;
    }
    println!("\nnon-stream chat, 1 client, {n} requests each, interleaved in 5 rounds:");
    let stats = measure_interleaved(&targets, n).await;
    report(&targets, &stats);
    // What Meridian itself adds: the same host, the same engine, the same request, against the
    // component that only forwards (and the one that does nothing at all).
    let (empty_s, proxy_s, meridian_s) = (&stats[1], &stats[2], &stats[3]);
    let cpu = |s: &Stats| s.cpu_us.unwrap_or(f64::NAN);
    println!(
        "  Meridian (embedded policy) over the bare forwarding component: p50 {:+.3} ms ({:.2}×), CPU {:+.0} µs/request ({:.2}×)",
        meridian_s.p50 - proxy_s.p50,
        meridian_s.p50 / proxy_s.p50,
        cpu(meridian_s) - cpu(proxy_s),
        cpu(meridian_s) / cpu(proxy_s)
    );
    println!(
        "  host floor (empty component) over direct: p50 {:+.3} ms, CPU {:.0} µs/request; forwarding floor over direct: p50 {:+.3} ms, CPU {:.0} µs/request",
        empty_s.p50 - stats[0].p50,
        cpu(empty_s),
        proxy_s.p50 - stats[0].p50,
        cpu(proxy_s)
    );

    let per32 = (n / 32).max(10);
    println!("non-stream chat, 32 clients × {per32} requests:");
    let mut d32 = run(&direct, 32, per32).await;
    let mut v32 = run(&via_embedded, 32, per32).await;
    let stats = [
        Stats {
            p50: pct(&mut d32, 0.5),
            p99: pct(&mut d32, 0.99),
            cpu_us: None,
        },
        Stats {
            p50: pct(&mut v32, 0.5),
            p99: pct(&mut v32, 0.99),
            cpu_us: None,
        },
    ];
    report(&[direct, via_embedded], &stats);
    assert!(
        down.requests().is_empty(),
        "a successful request must not touch the fallbacks"
    );
    drop((embedded, floor, plain, armed, local));
    tokio::time::sleep(Duration::from_millis(100)).await;
}
