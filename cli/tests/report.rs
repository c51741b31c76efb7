//! `meridian report` against log lines generated here, with every expected sum computed in the
//! test from what it generated (not from the report's code): totals per tenant and provider,
//! the country × jurisdiction matrix, requests served outside a residency rule (planted), the
//! date and tenant filters, and a page that needs no network.

use std::collections::BTreeMap;
use std::process::Command;

fn meridian() -> Command {
    Command::new(env!("CARGO_BIN_EXE_meridian"))
}

const POLICY: &str = r#"version = 1
[[providers]]
id = "eu-a"
base_url = "https://eu-a.example/v1"
location = "DE"
models = { m = "m" }
[[providers]]
id = "us-b"
base_url = "https://us-b.example/v1"
location = "US"
models = { m = "m" }
[[tenants]]
id = "acme"
keys = ["sha256:1111111111111111111111111111111111111111111111111111111111111111"]
jurisdictions = ["eu"]
[[tenants]]
id = "globex"
keys = ["sha256:2222222222222222222222222222222222222222222222222222222222222222"]
[[rules]]
id = "eu-only"
when = { client_jurisdiction = ["eu"] }
require = { jurisdiction = ["eu"] }
"#;

struct Line {
    ts: u64,
    tenant: &'static str,
    country: &'static str,
    provider: Option<&'static str>,
    status: u16,
    cost: f64,
    tokens: u64,
    rules: Vec<&'static str>,
}

fn location(p: &str) -> &'static str {
    if p == "eu-a" {
        "DE"
    } else {
        "US"
    }
}

/// 2026-11-30T00:00:00Z.
const START: u64 = 1_796_083_200_000 - 86_400_000;

fn generate(n: usize) -> Vec<Line> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n)
        .map(|i| {
            let tenant = ["acme", "globex", "anonymous"][(next() % 3) as usize];
            let country = ["DE", "FR", "US", "XX"][(next() % 4) as usize];
            let eu_client = matches!(country, "DE" | "FR");
            let refused = next() % 10 == 0;
            // What the policy would do: EU clients and acme only in the EU.
            let provider = if refused {
                None
            } else if eu_client || tenant == "acme" {
                Some("eu-a")
            } else {
                Some(["eu-a", "us-b"][(next() % 2) as usize])
            };
            let mut rules = Vec::new();
            if eu_client {
                rules.push("eu-only");
            }
            Line {
                ts: START + (i as u64) * 20_000,
                tenant,
                country,
                provider,
                status: if refused { 451 } else { 200 },
                cost: if refused {
                    0.0
                } else {
                    (next() % 1000) as f64 / 1e6
                },
                tokens: if refused { 0 } else { next() % 500 },
                rules,
            }
        })
        .collect()
}

fn render(l: &Line, i: usize) -> String {
    let mut v = serde_json::json!({
        "ts_ms": l.ts, "request_id": format!("r{i}"), "method": "POST", "path": "/v1/chat/completions",
        "status": l.status, "tenant": l.tenant, "model": "m", "country": l.country, "rules": l.rules,
        "duration_ms": 100 + (i % 50), "attempts": [],
    });
    match l.provider {
        Some(p) => {
            v["provider"] = p.into();
            v["jurisdiction"] = location(p).into();
            v["cost_usd"] = l.cost.into();
            v["usage"] = serde_json::json!({"prompt_tokens": l.tokens, "completion_tokens": 0, "total_tokens": l.tokens});
            v["attempts"] = serde_json::json!([{"provider": p, "outcome": "ok", "ms": 40}]);
        }
        None => v["error_code"] = "residency_violation".into(),
    }
    v.to_string()
}

#[test]
fn the_report_sums_what_the_log_says_and_finds_every_planted_crossing() {
    let mut lines = generate(100_000);
    // Planted: three requests served in the US although a residency rule or the tenant's
    // jurisdictions required the EU.
    for (i, (tenant, country)) in [("globex", "FR"), ("acme", "US"), ("acme", "DE")]
        .iter()
        .enumerate()
    {
        let l = &mut lines[1000 * (i + 1)];
        l.tenant = tenant;
        l.country = country;
        l.provider = Some("us-b");
        l.status = 200;
        l.rules = if *country == "US" {
            vec![]
        } else {
            vec!["eu-only"]
        };
    }
    let dir = std::env::temp_dir().join(format!("meridian-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("meridian.log");
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, POLICY).unwrap();
    let mut text: String = lines
        .iter()
        .enumerate()
        .map(|(i, l)| render(l, i) + "\n")
        .collect();
    text.push_str("meridian-host: serving … (not a request line)\n");
    std::fs::write(&log, &text).unwrap();

    // The oracle: sums over what was generated.
    let mut by_tenant: BTreeMap<&str, (u64, u64, f64, u64)> = BTreeMap::new();
    let mut matrix: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    let mut crossings = 0;
    for l in &lines {
        let e = by_tenant.entry(l.tenant).or_default();
        e.0 += 1;
        if let Some(p) = l.provider {
            e.1 += 1;
            e.2 += l.cost;
            e.3 += l.tokens;
            *matrix.entry((l.country, location(p))).or_default() += 1;
            let outside = location(p) != "DE";
            if outside && (l.rules.contains(&"eu-only") || l.tenant == "acme") {
                crossings += 1;
            }
        }
    }
    let out = meridian()
        .args(["report", "--json", "--stats", "--policy"])
        .arg(&policy)
        .arg("--html")
        .arg(dir.join("report.html"))
        .arg(&log)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Time and memory, reported (not asserted: this machine is shared); streamed, so the
    // memory does not grow with the log.
    let stats = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stats}");
    let stats = stats
        .lines()
        .find(|l| l.starts_with("report: "))
        .expect("--stats line");
    assert!(
        stats.starts_with(&format!("report: {} lines in ", lines.len() + 1)),
        "{stats}"
    );
    let peak_mib: f64 = stats
        .rsplit("peak memory ")
        .next()
        .and_then(|m| m.trim_end_matches(" MiB").parse().ok())
        .expect("peak memory in MiB");
    assert!(
        peak_mib < (text.len() as f64 / 1048576.0).max(64.0),
        "{peak_mib} MiB for a {} MiB log: not streamed",
        text.len() / 1048576
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["requests"], lines.len() as u64);
    assert_eq!(r["skipped_lines"], 1);
    for (t, (req, served, spend, tokens)) in &by_tenant {
        let got = &r["by_tenant"][*t];
        assert_eq!(got["requests"], *req, "{t}");
        assert_eq!(got["served"], *served, "{t}");
        assert_eq!(got["tokens"], *tokens, "{t}");
        assert!(
            (got["spend_usd"].as_f64().unwrap() - spend).abs() < 1e-9,
            "{t}"
        );
    }
    let got: BTreeMap<(String, String), u64> = r["matrix"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                (
                    m["client"].as_str().unwrap().to_string(),
                    m["processed_in"].as_str().unwrap().to_string(),
                ),
                m["requests"].as_u64().unwrap(),
            )
        })
        .collect();
    let want: BTreeMap<(String, String), u64> = matrix
        .iter()
        .map(|((c, l), n)| ((c.to_string(), l.to_string()), *n))
        .collect();
    assert_eq!(got, want);
    assert_eq!(crossings, 3, "the oracle sees exactly the planted ones");
    assert_eq!(r["crossings"], 3);
    let listed: Vec<&str> = r["crossings_listed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["r1000", "r2000", "r3000"]);
    assert_eq!(
        r["refusals"]["residency_violation"],
        lines.iter().filter(|l| l.provider.is_none()).count() as u64
    );
    assert_eq!(r["first_byte_ms"]["eu-a"]["p50"], 40);

    // The page: self-contained (nothing fetched), charts drawn in it, values escaped.
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(html.contains("<svg"));
    assert!(!html.contains("src=") && !html.contains("href=") && !html.contains("@import"));
    assert!(html.contains("3 request(s)"));
    // Rendered by headless Chromium: the charts are drawn, from the page alone.
    let clients = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/clients");
    let shot = dir.join("report.png");
    let page = std::process::Command::new("node")
        .arg("report_page.mjs")
        .current_dir(&clients)
        .env("REPORT_HTML", dir.join("report.html"))
        .env("SHOT", &shot)
        .output()
        .expect("node runs (./scripts/setup installs it and playwright-core)");
    println!("{}", String::from_utf8_lossy(&page.stdout));
    assert!(
        page.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&page.stdout),
        String::from_utf8_lossy(&page.stderr)
    );

    // Filters: one tenant, one day (2026-11-30: the first 4,320 lines at 20 s apart).
    let out = meridian()
        .args([
            "report",
            "--json",
            "--tenant",
            "globex",
            "--from",
            "2026-11-30",
            "--to",
            "2026-12-01",
        ])
        .arg(&log)
        .output()
        .unwrap();
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let want = lines
        .iter()
        .filter(|l| l.tenant == "globex" && l.ts < START + 86_400_000)
        .count() as u64;
    assert_eq!(r["requests"], want);
    assert_eq!(r["first_day"], "2026-11-30");
    assert_eq!(r["last_day"], "2026-11-30");
    assert_eq!(r["residency_checked"], false);

    // From stdin, as text.
    let mut child = meridian()
        .args(["report", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(text.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let summary = String::from_utf8(out.stdout).unwrap();
    assert!(
        summary.starts_with(&format!("Meridian report: {} requests", lines.len())),
        "{summary}"
    );
    assert!(summary.contains("residency: not checked"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Guard verdicts are counted per guard and outcome, from the lines' `guards`.
#[test]
fn the_report_counts_guard_verdicts() {
    let mut text = String::new();
    let mut want: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for i in 0..30u64 {
        let (guard, outcome) = match i % 4 {
            0 => ("injection", "refused"),
            1 => ("injection", "passed"),
            2 => ("moderation-us", "skipped"),
            _ => ("moderation-us", "failed-open"),
        };
        *want.entry((guard, outcome)).or_default() += 1;
        let line = serde_json::json!({
            "ts_ms": START + i * 1000, "request_id": format!("g{i}"), "method": "POST",
            "path": "/v1/chat/completions", "status": if outcome == "refused" { 422 } else { 200 },
            "tenant": "anonymous", "model": "m", "country": "DE", "rules": ["r"], "duration_ms": 5,
            "attempts": [], "guards": [{"guard": guard, "rule": "r", "on": "input", "outcome": outcome, "ms": 3, "beside": false}],
        });
        text.push_str(&line.to_string());
        text.push('\n');
    }
    let dir = std::env::temp_dir().join(format!("meridian-report-guards-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("meridian.log");
    std::fs::write(&log, &text).unwrap();
    let out = meridian()
        .args(["report", "--json"])
        .arg(&log)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let got: BTreeMap<(String, String), u64> = r["guards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                (
                    g["guard"].as_str().unwrap().to_string(),
                    g["outcome"].as_str().unwrap().to_string(),
                ),
                g["count"].as_u64().unwrap(),
            )
        })
        .collect();
    let want: BTreeMap<(String, String), u64> = want
        .into_iter()
        .map(|((g, o), n)| ((g.to_string(), o.to_string()), n))
        .collect();
    assert_eq!(got, want);
    let _ = std::fs::remove_dir_all(&dir);
}
