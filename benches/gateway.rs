//! `cargo bench --bench gateway` (or ./scripts/bench): prints figures, asserts nothing.
//!
//! 1. Added latency: the same mock upstream called directly and through Meridian (the built
//!    component in meridian-host), 1 client and 32 clients, p50/p99, in one run.
//! 2. CPU per request: the host process's user+system time over the run, per request.
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

async fn run(url: &str, clients: usize, per_client: usize) -> Vec<f64> {
    let body = r#"{"model":"chat-model","messages":[{"role":"user","content":"hi"}]}"#;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let url = url.to_string();
        tasks.push(tokio::spawn(async move {
            let c = reqwest::Client::new();
            let mut lat = Vec::with_capacity(per_client);
            for _ in 0..per_client {
                let t = Instant::now();
                let r = c
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                r.bytes().await.unwrap();
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
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

    for (name, text) in [
        ("default policy", policy::DEFAULT_POLICY.to_string()),
        ("20×50 policy", text),
    ] {
        let mut s = Vec::new();
        for _ in 0..200 {
            let t = Instant::now();
            std::hint::black_box(policy::load(&text, "x").unwrap());
            s.push(t.elapsed().as_secs_f64() * 1e6);
        }
        println!(
            "loading the {name} ({} bytes, natively): median {:.1} µs",
            text.len(),
            pct(&mut s, 0.5)
        );
    }
}

#[tokio::main]
async fn main() {
    bench_core();

    let up = Mock::start(Script::ok("benchmark answer")).await;
    let m = Meridian::with_policy(&policy_for(&[("alpha", &up, "DE", "")], ""), &[]).await;
    let pid = std::process::Command::new("pgrep")
        .args(["-n", "meridian-host"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<u32>().ok());
    let direct = format!("{}/v1/chat/completions", up.url());
    let via = m.at("/v1/chat/completions");
    let n1 = std::env::var("BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000usize);

    // Warm up both paths (connection pools, wasmtime code).
    run(&direct, 1, 50).await;
    run(&via, 1, 50).await;

    let mut d1 = run(&direct, 1, n1).await;
    let before = pid.and_then(cpu_ticks);
    let t = Instant::now();
    let mut v1 = run(&via, 1, n1).await;
    let wall1 = t.elapsed();
    let after = pid.and_then(cpu_ticks);
    let per32 = (n1 / 32).max(10);
    let mut d32 = run(&direct, 32, per32).await;
    let mut v32 = run(&via, 32, per32).await;

    let (dp50, dp99, vp50, vp99) = (
        pct(&mut d1, 0.5),
        pct(&mut d1, 0.99),
        pct(&mut v1, 0.5),
        pct(&mut v1, 0.99),
    );
    println!("\nnon-stream chat, {n1} requests, 1 client (ms): direct p50 {dp50:.3} p99 {dp99:.3} | via Meridian p50 {vp50:.3} p99 {vp99:.3}");
    println!(
        "  added latency: p50 {:.3} ms, p99 {:.3} ms; ratio p50 {:.2}×",
        vp50 - dp50,
        vp99 - dp99,
        vp50 / dp50
    );
    let (dp50, dp99, vp50, vp99) = (
        pct(&mut d32, 0.5),
        pct(&mut d32, 0.99),
        pct(&mut v32, 0.5),
        pct(&mut v32, 0.99),
    );
    println!("non-stream chat, 32 clients × {per32} (ms): direct p50 {dp50:.3} p99 {dp99:.3} | via Meridian p50 {vp50:.3} p99 {vp99:.3}");
    println!(
        "  added latency: p50 {:.3} ms, p99 {:.3} ms; ratio p50 {:.2}×",
        vp50 - dp50,
        vp99 - dp99,
        vp50 / dp50
    );
    if let (Some(b), Some(a)) = (before, after) {
        let hz = 100.0; // Linux USER_HZ
        let cpu_us = (a - b) as f64 / hz * 1e6 / n1 as f64;
        println!("meridian-host CPU per request (component + wasmtime + HTTP, 1 client): {cpu_us:.0} µs (wall {:.0} µs/request)", wall1.as_secs_f64() * 1e6 / n1 as f64);
    }
    drop(m);
    tokio::time::sleep(Duration::from_millis(100)).await;
}
