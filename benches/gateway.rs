//! `cargo bench --bench gateway` (or ./scripts/bench): prints figures; it checks only that every
//! request succeeds and that a successful request never touches a fallback.
//!
//! 1. Added latency: the same mock upstream called directly and through Meridian (the built
//!    component in meridian-host), 1 client and 32 clients, p50/p99, in one run.
//! 2. CPU per request: each host process's user+system time over its runs, per request.
//! 3. The pure decision for a 20-provider, 50-rule policy, and loading (parsing) a policy.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use meridian::{decide, facts, policy};
use support::{policy_for, Meridian, Mock, Script};

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

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

fn big_policy() -> String {
    let mut s = String::from("version = 1\n[settings]\ntrusted_country_headers = [\"cf-ipcountry\"]\nallow_anonymous = true\n");
    let cs = ["DE", "FR", "US", "GB", "JP"];
    for i in 0..20 {
        s += &format!(
            "[[providers]]\nid = \"p{i}\"\nbase_url = \"https://p{i}.example/v1\"\nlocation = \"{}\"\nzdr = {}\nlatency_ms = {}\nmodels = {{ \"m\" = {{ id = \"m{i}\", input_price = {}.0, output_price = 1.0 }}, \"other{i}\" = \"o\" }}\n",
            cs[i % 5], i % 2 == 0, 100 + i * 7, 20 - i
        );
    }
    for i in 0..50 {
        let when = match i % 3 {
            0 => "when = { client_jurisdiction = [\"eu\"] }",
            1 => "when = { model = [\"other*\"] }",
            _ => "when = { client_country = [\"US\", \"CA\"], stream = false }",
        };
        let req = match i % 4 {
            0 => "require = { deny = [\"p3\"] }",
            1 => "require = { jurisdiction = [\"eu\", \"uk\", \"us\"] }",
            2 => "require = { max_price = { input = 30.0 } }",
            _ => "require = { }",
        };
        s += &format!("[[rules]]\nid = \"r{i}\"\n{when}\n{req}\nprefer = {{ sort = \"price\" }}\n");
    }
    s
}

fn bench_core() {
    let text = big_policy();
    let p = policy::load(&text, "bench").unwrap();
    let headers = vec![("cf-ipcountry".to_string(), "DE".to_string())];
    let mut body = serde_json::Map::new();
    body.insert("model".into(), "m".into());
    let cx = facts::Context {
        request_id: "bench".into(),
        endpoint: facts::Endpoint::Chat,
        tenant: None,
        edge_region: None,
        headers: &headers,
    };
    let f = facts::from_request(&p, cx, &mut body).unwrap();
    let mut samples = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        for _ in 0..50 {
            std::hint::black_box(decide::decide(&p, std::hint::black_box(&f)));
        }
        samples.push(t.elapsed().as_secs_f64() * 1e6 / 50.0);
    }
    let d = decide::decide(&p, &f);
    println!("decision, 20 providers × 50 rules ({} matched, {} candidates): median {:.2} µs, p99 {:.2} µs", d.matched_rules.len(), d.candidates.len(), pct(&mut samples.clone(), 0.5), pct(&mut samples, 0.99));

    // What obtaining the policy costs per request: parsing + validating TOML (the `policy`
    // variable path) against decoding the form build.rs compiled (the embedded path).
    for (name, text) in [
        ("default policy", policy::DEFAULT_POLICY.to_string()),
        ("20×50 policy", text),
    ] {
        let compiled = policy::compile(&policy::load(&text, "x").unwrap()).unwrap();
        let (mut parse, mut decode) = (Vec::new(), Vec::new());
        for _ in 0..200 {
            let t = Instant::now();
            std::hint::black_box(policy::load(&text, "x").unwrap());
            parse.push(t.elapsed().as_secs_f64() * 1e6);
            let t = Instant::now();
            std::hint::black_box(policy::load_compiled(&compiled).unwrap());
            decode.push(t.elapsed().as_secs_f64() * 1e6);
        }
        let (p, d) = (pct(&mut parse, 0.5), pct(&mut decode, 0.5));
        println!(
            "obtaining the {name} natively: TOML {} bytes parse+validate median {p:.1} µs | compiled {} bytes decode median {d:.1} µs ({:.1}× faster)",
            text.len(),
            compiled.len(),
            p / d
        );
    }
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
    bench_core();
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
    let targets = [direct.clone(), via_embedded.clone(), via_plain, via_armed];

    // Warm up every path (connection pools, wasmtime code).
    for t in &targets {
        run(t, 1, 50).await;
    }
    println!("\nnon-stream chat, 1 client, {n} requests each, interleaved in 5 rounds:");
    let stats = measure_interleaved(&targets, n).await;
    report(&targets, &stats);

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
    drop((embedded, plain, armed, local));
    tokio::time::sleep(Duration::from_millis(100)).await;
}
