//! `cargo bench --bench guards` (part of ./scripts/bench): what an external guard adds to a
//! request's latency at p50, through the built component in meridian-host, in one run.
//!
//! The provider answers after `PROVIDER_MS`; a classifier guard answers after 20 ms (faster than
//! the provider) or 60 ms (slower). Beside the first attempt a guard should add no more than the
//! amount by which it is slower than the provider's answer (issue 34: 0 ms and 20 ms here); with
//! `before_send = true` it adds its whole latency. Rounds of every target are interleaved so
//! machine noise hits them alike; the figure is the p50 against the same policy without a guard.

#[path = "../tests/support/mod.rs"]
mod support;

use support::mock::Recorded;
use support::{policy_for, Meridian, Mock, Script};

mod common;
use common::pct;

const PROVIDER_MS: u64 = 40;

fn benign(_: &Recorded, _: usize) -> Script {
    Script::Json {
        status: 200,
        body: r#"[{"label":"INJECTION","score":0.01},{"label":"BENIGN","score":0.99}]"#.into(),
        headers: vec![("content-type".into(), "application/json".into())],
    }
}

async fn guard_after(ms: u64) -> Mock {
    Mock::with(move |r, n| Script::Delay(ms, Box::new(benign(r, n)))).await
}

fn guard_toml(id: &str, mock: &Mock) -> String {
    format!(
        "[[guards]]\nid = \"{id}\"\nkind = \"injection\"\nwire = \"http_classifier\"\nurl = \"{}/classify\"\nlocation = \"DE\"\nlabels = [\"INJECTION\"]\nretention_days = 0\ntrains_on_inputs = false\n",
        mock.url()
    )
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("BENCH_GUARD_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let provider =
        Mock::with(|_, _| Script::Delay(PROVIDER_MS, Box::new(Script::ok("answer")))).await;
    let (fast, slow) = (guard_after(20).await, guard_after(60).await);
    let guards = format!(
        "{}\n{}",
        guard_toml("fast", &fast),
        guard_toml("slow", &slow)
    );
    let rule = |uses: &str| format!("{guards}\n[[rules]]\nid = \"guarded\"\n{uses}");
    let cases: Vec<(&str, String, f64)> = vec![
        ("no guard", String::new(), 0.0),
        (
            "guard 20 ms, beside the first attempt",
            rule("[[rules.guards]]\nguard = \"fast\"\n"),
            0.0,
        ),
        (
            "guard 60 ms, beside the first attempt",
            rule("[[rules.guards]]\nguard = \"slow\"\n"),
            60.0 - PROVIDER_MS as f64,
        ),
        (
            "guard 20 ms, before_send",
            rule("[[rules.guards]]\nguard = \"fast\"\nbefore_send = true\n"),
            20.0,
        ),
    ];
    let mut nodes = Vec::new();
    for (_, extra, _) in &cases {
        let policy = policy_for(&[("p", &provider, "DE", "")], extra);
        nodes.push(Meridian::with_policy(&policy, &[]).await);
    }
    let rounds = 5;
    let mut lat =
        support::interleaved_latencies(&nodes.iter().collect::<Vec<_>>(), n, rounds, 5).await;
    let p50: Vec<f64> = lat.iter_mut().map(|l| pct(l, 0.5)).collect();
    println!(
        "guards: p50 per request, provider answering after {PROVIDER_MS} ms ({} requests each, one client):",
        n / rounds * rounds
    );
    for (i, (label, expected)) in cases.iter().map(|(l, _, e)| (l, e)).enumerate() {
        if i == 0 {
            println!("  {label:<40} p50 {:.2} ms (baseline)", p50[0]);
        } else {
            println!(
                "  {label:<40} p50 {:.2} ms | added {:+.2} ms (the guard's latency past the provider's: {expected:.0} ms)",
                p50[i],
                p50[i] - p50[0]
            );
        }
    }
}
