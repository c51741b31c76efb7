//! `cargo bench --bench gateway` (or ./scripts/bench): prints figures; it checks only that every
//! request succeeds and that a successful request never touches a fallback.
//!
//! 1. Added latency: the same mock upstream called directly and through Meridian (the built
//!    component in meridian-host), 1 client and 32 clients, p50/p99, in one run.
//! 2. CPU per request: each host process's user+system time over its runs, per request.
//! 3. References in the same host and run (benches/floor): an empty component (the host's own
//!    cost) and a component that only forwards to the same engine (the least any forwarding
//!    component costs), so Meridian's own share is the difference.
//! 4. Both socket modes of the host: as Spin leaves its sockets (the default: no TCP_NODELAY,
//!    so Nagle's algorithm meets the client's delayed ACKs) and with `--tcp-nodelay`.
//! 5. Streams on reused connections: time to the first byte and to the end of the stream, for
//!    an answer the engine sends in one piece and for one whose events come 2 ms apart,
//!    against the engine directly and against a component that only passes the stream through.
//!
//! 6. The WASI 0.3 build (adapters/spin-p3: instances reused, requests concurrent) beside the
//!    WASI 0.2 one, on the same policy, engine and host; and throughput at 32 clients.
//!
//! Every client reuses one connection for all its requests, as the SDKs and browsers do.
//!
//! The pure decision and policy loading are in `cargo bench --bench decide`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use support::mock::{chunk, SseEnd};
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

impl Target {
    /// A JSON POST of `body` to this target, with its extra headers.
    fn post(&self, c: &reqwest::Client, body: &str) -> reqwest::RequestBuilder {
        let mut rb = c
            .post(&self.url)
            .header("content-type", "application/json")
            .body(body.to_string());
        for (k, v) in &self.headers {
            rb = rb.header(*k, *v);
        }
        rb
    }
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
                let r = t.post(&c, &body).send().await.unwrap();
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

/// One client, `n` streamed requests on one connection: (time to first byte, time to the end)
/// per request, ms. `word` picks the engine's answer shape (see `engine`).
async fn run_stream(t: &Target, word: &str, n: usize) -> Vec<(f64, f64)> {
    let body = format!(
        r#"{{"model":"{}","stream":true,"messages":[{{"role":"user","content":"{word}"}}]}}"#,
        t.model
    );
    let c = reqwest::Client::new();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let r = t.post(&c, &body).send().await.unwrap();
        assert_eq!(r.status(), 200, "{}", t.label);
        let mut chunks = r.bytes_stream();
        let mut first = None;
        let mut all = Vec::new();
        while let Some(c) = chunks.next().await {
            let c = c.unwrap();
            first.get_or_insert_with(|| start.elapsed().as_secs_f64() * 1000.0);
            all.extend_from_slice(&c);
        }
        let end = start.elapsed().as_secs_f64() * 1000.0;
        assert!(
            all.ends_with(b"data: [DONE]\n\n"),
            "{}: {}",
            t.label,
            String::from_utf8_lossy(&all)
        );
        out.push((first.unwrap_or(end), end));
    }
    out
}

/// The engine at 127.0.0.1:11434: streamed requests whose prompt is `spaced` get four events
/// 2 ms apart, other streamed requests get them in one piece; the rest a JSON answer.
fn engine(rec: &support::mock::Recorded, _: usize) -> Script {
    let words = ["bench", "mark", " ans", "wer"];
    if rec.body["stream"] != true {
        return Script::ok("benchmark answer");
    }
    let events = words.iter().map(|w| chunk(w)).collect();
    if rec.body["messages"][0]["content"] == "spaced" {
        Script::Sse {
            events,
            gap_ms: 2,
            end: SseEnd::Done,
        }
    } else {
        Script::SseAtOnce(events)
    }
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
    let Some(local) = Mock::with_at("127.0.0.1:11434", engine).await else {
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
    // The WASI 0.3 build of the same core (scripts/setup builds it).
    let p3_wasm =
        support::meridian::root().join("target/p3/wasm32-wasip2/release/meridian_p3.wasm");
    if !p3_wasm.exists() {
        eprintln!("{} is missing: run ./scripts/setup", p3_wasm.display());
        std::process::exit(1);
    }
    let p3 = Meridian::with_host_args(Some(&p3_wasm), &[]).await;
    // Its reference: benches/floor-p3, the forwarder written the plain spin-sdk 7 way.
    let floor_p3_wasm = support::meridian::root()
        .join("target/p3-floor/wasm32-wasip2/release/meridian_floor_p3.wasm");
    if !floor_p3_wasm.exists() {
        eprintln!(
            "{} is missing: run ./scripts/bench, which builds it",
            floor_p3_wasm.display()
        );
        std::process::exit(1);
    }
    let floor_p3 = Meridian::other_component(&floor_p3_wasm).await;
    // The same two with TCP_NODELAY: a WASI 0.3 response's headers and body always leave in
    // separate writes (the runtime sends the headers before the component's body stream has
    // been read), so on Spin's sockets a reused connection meets the client's delayed ACK.
    let p3_nd = Meridian::with_host_args(Some(&p3_wasm), &["--tcp-nodelay"]).await;
    let floor_p3_nd = Meridian::with_host_args(Some(&floor_p3_wasm), &["--tcp-nodelay"]).await;
    // The same two with TCP_NODELAY set on the host's sockets (Spin does not set it).
    let embedded_nd = Meridian::with_host_args(None, &["--tcp-nodelay"]).await;
    let floor_nd = Meridian::with_host_args(Some(&floor_wasm), &["--tcp-nodelay"]).await;
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
    // The same policy with limits on every (anonymous) request: three counters (requests,
    // tokens, dollars), reserved before the attempt and settled after, in a real Redis on
    // loopback and in Spin's default SQLite file.
    let redis = support::redis::Redis::start().await;
    let limited_policy = policy_for(
        &providers,
        &format!("{rule}[[rules]]\nid = \"cap\"\nwhen = {{ anonymous = true }}\nlimits = {{ requests_per_minute = 1000000000, tokens_per_day = 1000000000000, usd_per_month = 1000000.0 }}\n"),
    );
    let rc = redis.runtime_config();
    let limited_redis = Meridian::start_with(
        Some(&limited_policy),
        &["--runtime-config-file", rc.to_str().unwrap_or_default()],
    )
    .await;
    let sqlite_dir = std::env::temp_dir().join(format!("meridian-bench-kv-{}", std::process::id()));
    std::fs::create_dir_all(&sqlite_dir).ok();
    let sqlite_rc = sqlite_dir.join("runtime-config.toml");
    std::fs::write(
        &sqlite_rc,
        "[key_value_store.default]\ntype = \"spin\"\npath = \"kv.db\"\n",
    )
    .ok();
    let limited_sqlite = Meridian::start_with(
        Some(&limited_policy),
        &[
            "--runtime-config-file",
            sqlite_rc.to_str().unwrap_or_default(),
        ],
    )
    .await;
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
    let proxy_nd = Target {
        label: "bare forwarding component, TCP_NODELAY",
        url: floor_nd.at("/v1/chat/completions"),
        headers: vec![],
        model: "llama-3.1-8b",
        pid: floor_nd.pid(),
    };
    let via_embedded_nd = Target {
        label: "Meridian, embedded policy, TCP_NODELAY",
        url: embedded_nd.at("/v1/chat/completions"),
        headers: vec![("x-meridian-privacy", "local-only")],
        model: "llama-3.1-8b",
        pid: embedded_nd.pid(),
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
    let via_p3 = Target {
        label: "Meridian WASI 0.3 build, embedded policy",
        url: p3.at("/v1/chat/completions"),
        headers: vec![("x-meridian-privacy", "local-only")],
        model: "llama-3.1-8b",
        pid: p3.pid(),
    };
    let proxy_p3 = Target {
        label: "reference: bare forwarder, WASI 0.3",
        url: floor_p3.at("/v1/chat/completions"),
        headers: vec![],
        model: "llama-3.1-8b",
        pid: floor_p3.pid(),
    };
    let via_p3_nd = Target {
        label: "Meridian WASI 0.3 build, TCP_NODELAY",
        url: p3_nd.at("/v1/chat/completions"),
        headers: vec![("x-meridian-privacy", "local-only")],
        model: "llama-3.1-8b",
        pid: p3_nd.pid(),
    };
    let proxy_p3_nd = Target {
        label: "bare forwarder, WASI 0.3, TCP_NODELAY",
        url: floor_p3_nd.at("/v1/chat/completions"),
        headers: vec![],
        model: "llama-3.1-8b",
        pid: floor_p3_nd.pid(),
    };
    let via_limited_redis = Target {
        label: "Meridian, variable + limits (Redis, loopback)",
        url: limited_redis.at("/v1/chat/completions"),
        headers: vec![],
        model: "chat-model",
        pid: limited_redis.pid(),
    };
    let via_limited_sqlite = Target {
        label: "Meridian, variable + limits (SQLite file)",
        url: limited_sqlite.at("/v1/chat/completions"),
        headers: vec![],
        model: "chat-model",
        pid: limited_sqlite.pid(),
    };
    let targets = [
        direct.clone(),
        empty,
        proxy.clone(),
        via_embedded.clone(),
        via_plain,
        via_armed,
        proxy_nd.clone(),
        via_embedded_nd.clone(),
        via_p3.clone(),
        proxy_p3.clone(),
        via_p3_nd.clone(),
        proxy_p3_nd.clone(),
        via_limited_redis,
        via_limited_sqlite,
    ];

    // Warm up every path (connection pools, wasmtime code).
    for t in &targets {
        run(t, 1, 50).await;
    }
    println!("\nnon-stream chat, 1 client on one reused connection, {n} requests each, interleaved in 5 rounds (host sockets as Spin's unless marked TCP_NODELAY):");
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

    for (i, store) in [(12, "Redis on loopback"), (13, "the SQLite file")] {
        println!(
            "  limits (3 counters) in {store} over the same policy without: p50 {:+.3} ms ({:.2}×), CPU {:+.0} µs/request ({:.2}×; the store's own CPU not included)",
            stats[i].p50 - stats[4].p50,
            stats[i].p50 / stats[4].p50,
            cpu(&stats[i]) - cpu(&stats[4]),
            cpu(&stats[i]) / cpu(&stats[4])
        );
    }

    let (p3_s, proxy_p3_s) = (&stats[8], &stats[9]);
    println!(
        "  the WASI 0.3 build over its own bare forwarder (WASI 0.3): p50 {:+.3} ms ({:.2}×), CPU {:+.0} µs/request ({:.2}×)",
        p3_s.p50 - proxy_p3_s.p50,
        p3_s.p50 / proxy_p3_s.p50,
        cpu(p3_s) - cpu(proxy_p3_s),
        cpu(p3_s) / cpu(proxy_p3_s)
    );
    println!(
        "  the WASI 0.3 build over the bare forwarding component: p50 {:+.3} ms ({:.2}×), CPU {:+.0} µs/request ({:.2}×); against the WASI 0.2 build: p50 {:.2}×, CPU {:.2}×",
        p3_s.p50 - proxy_s.p50,
        p3_s.p50 / proxy_s.p50,
        cpu(p3_s) - cpu(proxy_s),
        cpu(p3_s) / cpu(proxy_s),
        p3_s.p50 / meridian_s.p50,
        cpu(p3_s) / cpu(meridian_s)
    );

    let (p3_nd_s, proxy_p3_nd_s) = (&stats[10], &stats[11]);
    println!(
        "  with TCP_NODELAY: the WASI 0.3 build over its own bare forwarder: p50 {:+.3} ms ({:.2}×), CPU {:.2}×; over the WASI 0.2 build with TCP_NODELAY: p50 {:.2}×, CPU {:.2}×",
        p3_nd_s.p50 - proxy_p3_nd_s.p50,
        p3_nd_s.p50 / proxy_p3_nd_s.p50,
        cpu(p3_nd_s) / cpu(proxy_p3_nd_s),
        p3_nd_s.p50 / stats[7].p50,
        cpu(p3_nd_s) / cpu(&stats[7])
    );
    let (proxy_nd_s, meridian_nd_s) = (&stats[6], &stats[7]);
    println!(
        "  with TCP_NODELAY: Meridian over the bare forwarding component: p50 {:+.3} ms ({:.2}×), p99 {:+.3} ms",
        meridian_nd_s.p50 - proxy_nd_s.p50,
        meridian_nd_s.p50 / proxy_nd_s.p50,
        meridian_nd_s.p99 - proxy_nd_s.p99,
    );

    stream_figures(
        [
            (floor.at("/stream/v1/chat/completions"), &embedded),
            (floor_nd.at("/stream/v1/chat/completions"), &embedded_nd),
        ],
        n / 4,
    )
    .await;

    wire_figures(n / 4).await;

    let per32 = (n / 32).max(10);
    println!("non-stream chat, 32 clients × {per32} requests each (one connection per client):");
    let thirty_two = [
        direct.clone(),
        proxy,
        via_embedded,
        proxy_p3,
        via_p3,
        proxy_nd,
        via_embedded_nd,
        proxy_p3_nd,
        via_p3_nd,
    ];
    let mut stats = Vec::new();
    for t in &thirty_two {
        let cpu_before = t.pid.and_then(cpu_ticks);
        let start = Instant::now();
        let mut lat = run(t, 32, per32).await;
        let secs = start.elapsed().as_secs_f64();
        // USER_HZ = 100 ticks a second.
        let cpu_us = match (cpu_before, t.pid.and_then(cpu_ticks)) {
            (Some(a), Some(b)) => Some((b - a) as f64 / 100.0 * 1e6 / (32 * per32) as f64),
            _ => None,
        };
        println!(
            "  {:<48} {:>8.0} requests/s",
            t.label,
            (32 * per32) as f64 / secs
        );
        stats.push(Stats {
            p50: pct(&mut lat, 0.5),
            p99: pct(&mut lat, 0.99),
            cpu_us,
        });
    }
    report(&thirty_two, &stats);
    assert!(
        down.requests().is_empty(),
        "a successful request must not touch the fallbacks"
    );
    drop((
        embedded,
        floor,
        plain,
        armed,
        local,
        embedded_nd,
        floor_nd,
        p3,
        floor_p3,
        p3_nd,
        floor_p3_nd,
    ));
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Streams on one reused connection per target, interleaved in rounds: the engine directly, then
/// the pass-through component and Meridian, as Spin leaves sockets and with TCP_NODELAY.
async fn stream_figures(modes: [(String, &Meridian); 2], n: usize) {
    let mut targets = vec![Target {
        label: "direct to the engine",
        url: "http://127.0.0.1:11434/v1/chat/completions".into(),
        headers: vec![],
        model: "llama-3.1-8b",
        pid: None,
    }];
    let labels = [
        (
            "pass-through component, Spin sockets",
            "Meridian, Spin sockets",
        ),
        (
            "pass-through component, TCP_NODELAY",
            "Meridian, TCP_NODELAY",
        ),
    ];
    for ((floor_url, meridian), (floor_label, meridian_label)) in modes.iter().zip(labels) {
        targets.push(Target {
            label: floor_label,
            url: floor_url.clone(),
            headers: vec![],
            model: "llama-3.1-8b",
            pid: None,
        });
        targets.push(Target {
            label: meridian_label,
            url: meridian.at("/v1/chat/completions"),
            headers: vec![("x-meridian-privacy", "local-only")],
            model: "llama-3.1-8b",
            pid: None,
        });
    }
    for (word, shape) in [
        ("burst", "events in one piece"),
        ("spaced", "4 events 2 ms apart"),
    ] {
        for t in &targets {
            run_stream(t, word, 20).await;
        }
        let rounds = 5;
        let mut got: Vec<Vec<(f64, f64)>> = vec![Vec::new(); targets.len()];
        for _ in 0..rounds {
            for (i, t) in targets.iter().enumerate() {
                got[i].extend(run_stream(t, word, (n / rounds).max(4)).await);
            }
        }
        println!(
            "stream, {shape}, 1 client on one reused connection, {} requests each:",
            got[0].len()
        );
        let q = |v: &[(f64, f64)], end: bool, p: f64| {
            let mut x: Vec<f64> = v.iter().map(|&(f, e)| if end { e } else { f }).collect();
            pct(&mut x, p)
        };
        let base_end = q(&got[0], true, 0.5);
        for (i, t) in targets.iter().enumerate() {
            let (f50, e50, e99) = (
                q(&got[i], false, 0.5),
                q(&got[i], true, 0.5),
                q(&got[i], true, 0.99),
            );
            if i == 0 {
                println!("  {:<40} first byte p50 {f50:.3} ms, end p50 {e50:.3} ms, p99 {e99:.3} ms (baseline)", t.label);
            } else {
                println!(
                    "  {:<40} first byte p50 {f50:.3} ms, end p50 {e50:.3} ms, p99 {e99:.3} ms | end added p50 {:+.3} ms",
                    t.label,
                    e50 - base_end
                );
            }
        }
        for (floor_i, meridian_i) in [(1, 2), (3, 4)] {
            println!(
                "  {}: end of stream p50 {:+.3} ms against the pass-through component",
                targets[meridian_i].label,
                q(&got[meridian_i], true, 0.5) - q(&got[floor_i], true, 0.5)
            );
        }
    }
}

/// A stream from an Anthropic provider (translated event by event) against the same stream from
/// an OpenAI-wire provider (passed through), same events, one Meridian, interleaved: time to the
/// first byte and to the end.
async fn wire_figures(n: usize) {
    let words = ["bench", "mark", " ans", "wer"];
    let mut anthropic_events = vec![
        r#"{"type":"message_start","message":{"id":"msg_b","model":"claude-x","usage":{"input_tokens":5,"output_tokens":1}}}"#.to_string(),
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#.to_string(),
    ];
    for w in words {
        anthropic_events.push(format!(
            r#"{{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":"{w}"}}}}"#
        ));
    }
    anthropic_events.push(r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":4}}"#.to_string());
    anthropic_events.push(r#"{"type":"message_stop"}"#.to_string());
    let anth = Mock::start(Script::SseAtOnce(anthropic_events)).await;
    let oai = Mock::start(Script::SseAtOnce(words.iter().map(|w| chunk(w)).collect())).await;
    let policy = policy_for(
        &[
            ("anth", &anth, "DE", "kind = \"anthropic\""),
            ("oai", &oai, "DE", ""),
        ],
        "",
    );
    let m = Meridian::with_policy(&policy, &[]).await;
    let c = reqwest::Client::new();
    let url = m.at("/v1/chat/completions");
    let one = |only: &'static str| {
        let (c, url) = (c.clone(), url.clone());
        async move {
            let start = Instant::now();
            let r = c
                .post(&url)
                .json(&serde_json::json!({"model": "chat-model", "stream": true,
                    "messages": [{"role": "user", "content": "hi"}], "provider": {"only": [only]}}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let mut s = r.bytes_stream();
            let mut first = None;
            let mut all = Vec::new();
            while let Some(b) = s.next().await {
                first.get_or_insert_with(|| start.elapsed().as_secs_f64() * 1000.0);
                all.extend_from_slice(&b.unwrap());
            }
            assert!(all.ends_with(b"data: [DONE]\n\n"), "{only}");
            (first.unwrap_or(0.0), start.elapsed().as_secs_f64() * 1000.0)
        }
    };
    for _ in 0..20 {
        one("anth").await;
        one("oai").await;
    }
    let (mut af, mut ae, mut of, mut oe) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n.max(20) {
        let (f, e) = one("anth").await;
        af.push(f);
        ae.push(e);
        let (f, e) = one("oai").await;
        of.push(f);
        oe.push(e);
    }
    let (af, ae, of, oe) = (
        pct(&mut af, 0.5),
        pct(&mut ae, 0.5),
        pct(&mut of, 0.5),
        pct(&mut oe, 0.5),
    );
    println!(
        "stream through Meridian, {} requests each, interleaved: Anthropic provider (translated) first byte p50 {af:.3} ms, end {ae:.3} ms | OpenAI-wire provider (passed through) first byte {of:.3} ms, end {oe:.3} ms | translation adds {:+.3} ms to the first byte",
        n.max(20),
        af - of
    );
}
