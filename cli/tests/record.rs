//! `meridian report --record`: the record of processing from a policy with recipients in
//! several jurisdictions (processing and storage apart, safeguards stated and missing, an
//! external guard) and a log of mixed traffic generated here. Every number is computed in the
//! test from what it generated; the page is read back in headless Chromium.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::json;

fn meridian() -> Command {
    Command::new(env!("CARGO_BIN_EXE_meridian"))
}

const POLICY: &str = r#"version = 1
name = "record"
revision = "7"
[settings.record]
controller = "Example GmbH, Berlin"
[[providers]]
id = "eu-a"
base_url = "https://eu-a.example/v1"
location = "DE"
retention_days = 0
trains_on_inputs = false
models = { m = "m" }
[[providers]]
id = "us-b"
base_url = "https://us-b.example/v1"
location = "US"
transfer_safeguard = "dpf"
retention_days = 30
trains_on_inputs = false
models = { m = "m" }
[[providers]]
id = "fr-kept-in-in"
base_url = "https://fr.example/v1"
location = "FR"
storage = "IN"
retention_days = 7
trains_on_inputs = false
models = { m = "m" }
[[guards]]
id = "mod-us"
kind = "moderation"
wire = "openai_moderation"
url = "https://api.openai.com/v1"
location = "US"
transfer_safeguard = "scc"
retention_days = 0
trains_on_inputs = false
[[guards]]
id = "inj"
kind = "injection"
wire = "builtin"
[[tenants]]
id = "acme"
keys = ["sha256:1111111111111111111111111111111111111111111111111111111111111111"]
purposes = ["customer support"]
[[tenants]]
id = "globex"
keys = ["sha256:2222222222222222222222222222222222222222222222222222222222222222"]
[[rules]]
id = "g"
[[rules.guards]]
guard = "mod-us"
[[rules.guards]]
guard = "inj"
"#;

const PROVIDERS: [&str; 3] = ["eu-a", "us-b", "fr-kept-in-in"];
const START: u64 = 1_764_460_800_000; // 2025-11-30T00:00:00Z

#[test]
fn the_record_of_processing_counts_what_the_log_shows_under_what_the_policy_states() {
    // `meridian check` warns about the recipient kept in a third country without a safeguard.
    let dir = std::env::temp_dir().join(format!("meridian-record-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, POLICY).unwrap();
    let out = meridian().arg("check").arg(&policy).output().unwrap();
    let said =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("provider `fr-kept-in-in` processes or keeps data outside `eea` and states no `transfer_safeguard`"), "{said}");
    assert!(!said.contains("provider `us-b` processes"), "{said}");

    // The log: 600 requests over three days, a deterministic mix.
    let mut lines = Vec::new();
    let mut sent: BTreeMap<&str, u64> = BTreeMap::new();
    let mut kinds: BTreeMap<&str, u64> = BTreeMap::new();
    let mut actions: BTreeMap<&str, u64> = BTreeMap::new();
    let mut tenants: BTreeMap<&str, u64> = BTreeMap::new();
    let (mut refused, mut in_day2) = (0u64, 0u64);
    for i in 0..600u64 {
        let ts = START + i * 432_000; // 600 × 7.2 min = 3 days
        let tenant = if i % 3 == 0 { "globex" } else { "acme" };
        let mut line = json!({
            "ts_ms": ts, "request_id": format!("r{i}"), "method": "POST",
            "path": "/v1/chat/completions", "tenant": tenant, "model": "m",
            "rules": ["g"], "candidates": [], "excluded": [],
        });
        let day2 = (START + 86_400_000..START + 2 * 86_400_000).contains(&ts);
        if i % 10 == 0 {
            // Refused before anything was sent.
            line["status"] = 451.into();
            line["attempts"] = json!([]);
            refused += 1;
        } else {
            let first = PROVIDERS[(i % 3) as usize];
            let mut attempts = vec![json!({"provider": first, "outcome": "status 503", "ms": 5})];
            *sent.entry(first).or_default() += 1;
            // Every seventh retries the same provider, then falls back to eu-a.
            if i % 7 == 0 {
                attempts.push(json!({"provider": first, "outcome": "status 503", "ms": 5}));
                if first != "eu-a" {
                    *sent.entry("eu-a").or_default() += 1;
                }
                attempts.push(json!({"provider": "eu-a", "outcome": "ok", "ms": 5}));
                line["provider"] = "eu-a".into();
            } else {
                attempts[0]["outcome"] = "ok".into();
                line["provider"] = first.into();
            }
            line["status"] = 200.into();
            line["attempts"] = attempts.into();
        }
        // The guards judged every other request; the built-in one sends nothing.
        if i % 2 == 0 {
            line["guards"] = json!([{"guard": "inj", "outcome": "passed"}, {"guard": "mod-us", "outcome": "passed"}]);
            *sent.entry("mod-us").or_default() += 1;
        }
        if i % 5 == 1 {
            line["pii"] =
                json!({"found": {"email": 2, "iban": 1}, "action": "redacted", "redacted": 3});
            *kinds.entry("email").or_default() += 2;
            *kinds.entry("iban").or_default() += 1;
            *actions.entry("redacted").or_default() += 1;
        } else if i % 5 == 2 {
            line["pii"] = json!({"found": {}, "action": "none"});
        }
        *tenants.entry(tenant).or_default() += 1;
        if day2 {
            in_day2 += 1;
        }
        lines.push(line.to_string());
    }
    // Lines that are no requests: a health check, a stream's opening line, noise.
    lines.push(json!({"ts_ms": START, "request_id": "h", "method": "GET", "path": "/healthz", "status": 200}).to_string());
    lines.push(json!({"ts_ms": START, "request_id": "s", "event": "stream_open", "path": "/v1/chat/completions"}).to_string());
    lines.push("meridian-host: serving".to_string());
    let log = dir.join("meridian.log");
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();

    let page = dir.join("record.html");
    let out = meridian()
        .args(["report", "--record", "--json", "--policy"])
        .arg(&policy)
        .arg("--html")
        .arg(&page)
        .arg(&log)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["controller"], "Example GmbH, Berlin");
    assert_eq!(r["home"], "eea");
    assert_eq!(r["requests"], 600);
    assert_eq!(r["refused"], refused);
    assert_eq!(r["period"]["from"], "2025-11-30");
    assert_eq!(r["period"]["to"], "2025-12-02");
    let recipient = |id: &str| {
        r["recipients"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["id"] == id)
            .unwrap_or_else(|| panic!("{id} in {r}"))
            .clone()
    };
    for id in ["eu-a", "us-b", "fr-kept-in-in", "mod-us"] {
        assert_eq!(recipient(id)["requests"], sent[id], "{id}");
    }
    assert_eq!(
        r["recipients"].as_array().unwrap().len(),
        4,
        "the built-in guard is no recipient"
    );
    let f = recipient("fr-kept-in-in");
    assert_eq!(
        (f["processes_in"].as_str(), f["stores_in"].as_str()),
        (Some("FR"), Some("IN"))
    );
    assert_eq!(f["retention_days"], 7);
    assert_eq!(recipient("eu-a")["third_country"], false);
    // Transfers: the US provider (DPF), the guard (SCC), storage in India (none stated).
    let transfers: BTreeMap<String, (Option<String>, u64)> = r["transfers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["recipient"].as_str().unwrap().to_string(),
                (
                    t["safeguard"].as_str().map(str::to_string),
                    t["requests"].as_u64().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(
        transfers,
        BTreeMap::from([
            ("fr-kept-in-in".to_string(), (None, sent["fr-kept-in-in"])),
            (
                "mod-us".to_string(),
                (Some("scc".to_string()), sent["mod-us"])
            ),
            ("us-b".to_string(), (Some("dpf".to_string()), sent["us-b"])),
        ])
    );
    assert_eq!(r["personal_data"], json!(kinds));
    assert_eq!(r["personal_data_actions"], json!(actions));
    assert_eq!(
        r["purposes"][0],
        json!({"tenant": "acme", "purposes": ["customer support"], "requests": tenants["acme"]})
    );
    assert_eq!(
        r["purposes"][1],
        json!({"tenant": "globex", "purposes": [], "requests": tenants["globex"]})
    );
    assert_eq!(r["skipped_lines"], 1);

    // One day's record.
    let out = meridian()
        .args([
            "report",
            "--record",
            "--json",
            "--from",
            "2025-12-01",
            "--to",
            "2025-12-02",
            "--policy",
        ])
        .arg(&policy)
        .arg(&log)
        .output()
        .unwrap();
    let day: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(day["requests"], in_day2);
    assert_eq!(
        day["period"],
        json!({"from": "2025-12-01", "to": "2025-12-02"})
    );

    // The page, self-contained, read back in headless Chromium.
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(!html.contains("src=") && !html.contains("href=") && !html.contains("@import"));
    let expect = json!({
        "controller": "Example GmbH, Berlin",
        "requests": 600,
        "recipients": {
            "eu-a": {"processes": "DE", "stores": "DE", "requests": sent["eu-a"]},
            "us-b": {"processes": "US", "stores": "US", "requests": sent["us-b"]},
            "fr-kept-in-in": {"processes": "FR", "stores": "IN", "requests": sent["fr-kept-in-in"]},
            "mod-us": {"processes": "US", "stores": "US", "requests": sent["mod-us"]},
        },
        "transfers": {
            "us-b": {"safeguard": "Data Privacy Framework", "requests": sent["us-b"]},
            "mod-us": {"safeguard": "standard contractual clauses", "requests": sent["mod-us"]},
            "fr-kept-in-in": {"safeguard": "none stated", "requests": sent["fr-kept-in-in"]},
        },
        "kinds": kinds,
        "tenants": tenants,
    });
    let clients = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/clients");
    let shot = dir.join("record.png");
    let run = Command::new("node")
        .arg("record_page.mjs")
        .current_dir(&clients)
        .env("RECORD_HTML", &page)
        .env("EXPECT", expect.to_string())
        .env("SHOT", &shot)
        .output()
        .expect("node runs (./scripts/setup installs it and playwright-core)");
    println!("{}", String::from_utf8_lossy(&run.stdout));
    assert!(
        run.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
