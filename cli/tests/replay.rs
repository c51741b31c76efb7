//! `meridian replay` over 100,000 log lines generated here as the component writes them under
//! OLD, against NEW. Every expected total is computed in the test from what it generated and
//! what the change does (written out below), not from the replay's code. Time and peak memory
//! are printed; memory must stay bounded (the log is streamed).

use std::process::Command;

fn meridian() -> Command {
    Command::new(env!("CARGO_BIN_EXE_meridian"))
}

const OLD: &str = r#"version = 1
name = "shop"
revision = "1"
[settings]
allow_anonymous = true
[[providers]]
id = "us-cheap"
base_url = "https://us.example/v1"
location = "US"
models = { m = { id = "m", input_price = 1.0, output_price = 2.0 }, old-m = { id = "o", input_price = 1.0, output_price = 1.0 } }
[[providers]]
id = "eu-a"
base_url = "https://eu-a.example/v1"
location = "DE"
models = { m = { id = "m", input_price = 3.0, output_price = 6.0 } }
[[providers]]
id = "fr-b"
base_url = "https://fr-b.example/v1"
location = "FR"
zdr = true
models = { m = { id = "m", input_price = 2.0, output_price = 4.0 } }
[[tenants]]
id = "acme"
keys = ["sha256:1111111111111111111111111111111111111111111111111111111111111111"]
jurisdictions = ["eu"]
[[tenants]]
id = "globex"
keys = ["sha256:2222222222222222222222222222222222222222222222222222222222222222"]
[[tenants]]
id = "initech"
keys = ["sha256:3333333333333333333333333333333333333333333333333333333333333333"]
[[rules]]
id = "cheapest"
prefer = { sort = "price" }
[[rules]]
id = "mail-eu"
when = { pii = ["email"] }
require = { jurisdiction = ["eu"] }
"#;

/// NEW is OLD with these edits, each a (from, to) that must apply once: `old-m` retired, tenant
/// `initech` removed, e-mail addresses refused instead of kept in the EU, EU clients served in
/// the EU, and `fr-b` stating that it does not train on inputs.
const CHANGE: &[(&str, &str)] = &[
    (r#"revision = "1""#, r#"revision = "2""#),
    (
        r#", old-m = { id = "o", input_price = 1.0, output_price = 1.0 }"#,
        "",
    ),
    ("zdr = true\n", "zdr = true\ntrains_on_inputs = false\n"),
    (
        "[[tenants]]\nid = \"initech\"\nkeys = [\"sha256:3333333333333333333333333333333333333333333333333333333333333333\"]\n",
        "",
    ),
    (
        "id = \"mail-eu\"\nwhen = { pii = [\"email\"] }\nrequire = { jurisdiction = [\"eu\"] }\n",
        "id = \"no-email\"\nwhen = { pii = [\"email\"] }\nrefuse = true\n\
         [[rules]]\nid = \"eu-clients\"\nwhen = { client_jurisdiction = [\"eu\"] }\nrequire = { jurisdiction = [\"eu\"] }\n",
    ),
];

fn new_policy() -> String {
    let mut p = OLD.to_string();
    for (from, to) in CHANGE {
        assert_eq!(p.matches(from).count(), 1, "{from}");
        p = p.replacen(from, to, 1);
    }
    p
}

/// (input, output) USD per million tokens, and where each provider processes data.
fn prices(provider: &str) -> (f64, f64) {
    match provider {
        "us-cheap" => (1.0, 2.0),
        "fr-b" => (2.0, 4.0),
        "eu-a" => (3.0, 6.0),
        _ => unreachable!(),
    }
}

fn location(provider: &str) -> &'static str {
    match provider {
        "us-cheap" => "US",
        "fr-b" => "FR",
        "eu-a" => "DE",
        _ => unreachable!(),
    }
}

fn cost(provider: &str, prompt: u64, completion: u64) -> f64 {
    let (i, o) = prices(provider);
    (prompt as f64 * i + completion as f64 * o) / 1e6
}

#[derive(Default, Debug)]
struct Expected {
    lines: u64,
    replayed: u64,
    unchanged: u64,
    moved: u64,
    moved_examples: Vec<String>,
    email_refused: u64,
    email_served_before: u64,
    retired_refused: u64,
    retired_served_before: u64,
    now_served: u64,
    not_inference: u64,
    garbage: u64,
    initech: u64,
    old_usd: f64,
    new_usd: f64,
    priced: u64,
    no_usage: u64,
}

/// The log, and the totals a correct replay against NEW reports.
fn generate(n: usize, out: &mut impl std::io::Write) -> Expected {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut e = Expected::default();
    for i in 0..n {
        let id = format!("req-{i:06}");
        e.lines += 1;
        let r = next() % 1000;
        if r < 5 {
            // Not an inference request: nothing to decide.
            writeln!(out, r#"{{"ts_ms":1,"request_id":"{id}","method":"GET","path":"/v1/models","status":200,"rules":[],"candidates":[],"excluded":[],"attempts":[],"duration_ms":0}}"#).unwrap();
            e.not_inference += 1;
            continue;
        }
        if r < 6 {
            writeln!(out, "not a log line {{").unwrap();
            e.garbage += 1;
            continue;
        }
        e.replayed += 1;
        let retired = next() % 20 == 0;
        let mut tenant = ["acme", "globex", "initech", "anonymous"][(next() % 4) as usize];
        let mut country = ["DE", "FR", "US", "BR", "XX"][(next() % 5) as usize];
        let (mut zdr, mut email, mut no_training) =
            (next() % 10 == 0, next() % 12 == 0, next() % 25 == 0);
        if retired {
            // Old-model traffic came from outside the EU, without flags or personal data.
            if tenant == "acme" {
                tenant = "globex";
            }
            if matches!(country, "DE" | "FR") {
                country = "US";
            }
            (zdr, email, no_training) = (false, false, false);
        }
        if email {
            no_training = false;
        }
        if tenant == "initech" {
            e.initech += 1;
        }
        let stream = next() % 2 == 0;
        let model = if retired { "old-m" } else { "m" };
        let eu = matches!(country, "DE" | "FR");
        let mut privacy = Vec::new();
        if zdr {
            privacy.push("zdr");
        }
        if no_training {
            privacy.push("no-training");
        }
        // What OLD decided: no provider states `trains_on_inputs` (no-training is refused);
        // the cheapest first, in the EU for acme and for e-mail, and only fr-b for zdr.
        let old_first = if no_training {
            None
        } else if tenant == "acme" || email || zdr {
            Some("fr-b")
        } else {
            Some("us-cheap")
        };
        let failed = old_first.is_some() && next() % 33 == 0;
        let usage =
            (old_first.is_some() && !failed).then(|| (1 + next() % 2000, 1 + next() % 1000));
        // Now and then fr-b fails and eu-a, next in price order in the EU, answers.
        let served_by = match old_first {
            Some("fr-b") if usage.is_some() && next() % 20 == 0 => Some("eu-a"),
            other => other,
        };
        let mut line = serde_json::json!({
            "ts_ms": 1_796_083_200_000u64 + i as u64,
            "request_id": id,
            "method": "POST",
            "path": "/v1/chat/completions",
            "tenant": tenant,
            "model": model,
            "country": country,
            "country_source": "header cf-ipcountry",
            "edge": "not_configured",
            "rules": [],
            "candidates": [],
            "excluded": [],
            "attempts": [],
            "pii": {"found": if email { serde_json::json!({"email": 1}) } else { serde_json::json!({}) },
                    "action": if email { "routed" } else { "none" }},
            "facts": {"endpoint": "chat", "stream": stream, "privacy": privacy,
                      "input_tokens": 12, "output_tokens": 256},
            "duration_ms": 5,
        });
        match (old_first, usage) {
            (None, _) => {
                line["status"] = 403.into();
                line["error_code"] = "no_allowed_provider".into();
                line["refused_by"] = "policy".into();
            }
            (Some(p), None) => {
                line["status"] = 502.into();
                line["error_code"] = "upstream_error".into();
                line["facts"]["first"] =
                    serde_json::json!({"provider": p, "location": location(p)});
            }
            (Some(p), Some((pt, ct))) => {
                let s = served_by.unwrap_or(p);
                line["status"] = 200.into();
                line["provider"] = s.into();
                line["served_model"] = model.into();
                line["jurisdiction"] = location(s).into();
                line["usage"] = serde_json::json!({"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct});
                line["cost_usd"] = cost(s, pt, ct).into();
                line["facts"]["first"] =
                    serde_json::json!({"provider": p, "location": location(p)});
                e.old_usd += cost(s, pt, ct);
                e.priced += 1;
            }
        }
        writeln!(out, "{line}").unwrap();

        // What NEW decides: personal data refused before anything else; old-m unknown;
        // fr-b alone states it does not train; EU clients in the EU.
        let served = usage.is_some();
        let new_first = if email {
            e.email_refused += 1;
            e.email_served_before += u64::from(served);
            None
        } else if retired {
            e.retired_refused += 1;
            e.retired_served_before += u64::from(served);
            None
        } else if no_training {
            e.now_served += 1;
            Some("fr-b")
        } else if tenant == "acme" || zdr || eu {
            Some("fr-b")
        } else {
            Some("us-cheap")
        };
        match (old_first, new_first) {
            (Some("us-cheap"), Some("fr-b")) => {
                e.moved += 1;
                if e.moved_examples.len() < 3 {
                    e.moved_examples.push(id.clone());
                }
            }
            (Some(a), Some(b)) if a == b => e.unchanged += 1,
            _ => {}
        }
        match (usage, new_first) {
            // The same first choice: the same fallback answers, at NEW's price for it.
            (Some((pt, ct)), Some(p)) if old_first == Some(p) => {
                e.new_usd += cost(served_by.unwrap_or(p), pt, ct)
            }
            (Some((pt, ct)), Some(p)) => e.new_usd += cost(p, pt, ct),
            (None, Some(_)) => e.no_usage += 1,
            _ => {}
        }
    }
    e
}

#[test]
fn replay_of_100000_lines_matches_the_totals_computed_here() {
    let dir = std::env::temp_dir().join(format!("meridian-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (old, new, log) = (
        dir.join("old.toml"),
        dir.join("new.toml"),
        dir.join("log.jsonl"),
    );
    std::fs::write(&old, OLD).unwrap();
    std::fs::write(&new, new_policy()).unwrap();
    let mut w = std::io::BufWriter::new(std::fs::File::create(&log).unwrap());
    let e = generate(100_000, &mut w);
    drop(w);
    assert!(e.moved > 0 && e.email_refused > 0 && e.retired_refused > 0 && e.now_served > 0);

    // Both policies are valid, and unchanged they replay with no change.
    let same = meridian()
        .arg("replay")
        .arg(&old)
        .arg(&log)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&same.stdout);
    assert_eq!(same.status.code(), Some(0), "{text}");
    assert!(text.contains("0 changed"), "{text}");

    let out = meridian()
        .args(["replay", "--json", "--stats"])
        .arg(&new)
        .arg(&log)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{}", stderr.trim());
    assert_eq!(out.status.code(), Some(1), "changes: exit 1; {stderr}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let n = |v: &serde_json::Value| v.as_u64().unwrap();

    assert_eq!(n(&r["lines"]), e.lines);
    assert_eq!(n(&r["replayed"]), e.replayed);
    let skipped = r["skipped"].as_object().unwrap();
    assert_eq!(
        n(&skipped[meridian::replay::SKIP_NO_FACTS]),
        e.not_inference
    );
    assert_eq!(n(&skipped[meridian::replay::SKIP_NOT_JSON]), e.garbage);
    assert_eq!(n(&r["unchanged"]), e.unchanged);
    assert_eq!(
        n(&r["changed"]),
        e.moved + e.email_refused + e.retired_refused + e.now_served
    );

    let moves = r["provider_moves"].as_array().unwrap();
    assert_eq!(moves.len(), 1, "{moves:?}");
    assert_eq!(moves[0]["from"], "us-cheap");
    assert_eq!(moves[0]["to"], "fr-b");
    assert_eq!(n(&moves[0]["requests"]), e.moved);
    assert_eq!(moves[0]["examples"], serde_json::json!(e.moved_examples));
    let j = r["jurisdiction_moves"].as_array().unwrap();
    assert_eq!(j.len(), 1);
    assert_eq!(
        (j[0]["from"].as_str(), j[0]["to"].as_str()),
        (Some("US"), Some("FR"))
    );
    assert_eq!(n(&j[0]["requests"]), e.moved);

    let refused = r["now_refused"].as_array().unwrap();
    assert_eq!(refused.len(), 2, "{refused:?}");
    let by = |code: &str| {
        refused
            .iter()
            .find(|x| x["code"] == code)
            .unwrap_or_else(|| panic!("no {code} in {refused:?}"))
    };
    let pd = by("personal_data_refused");
    assert_eq!(
        (
            n(&pd["status"]),
            n(&pd["requests"]),
            n(&pd["served_before"])
        ),
        (422, e.email_refused, e.email_served_before)
    );
    let nf = by("model_not_found");
    assert_eq!(
        (
            n(&nf["status"]),
            n(&nf["requests"]),
            n(&nf["served_before"])
        ),
        (404, e.retired_refused, e.retired_served_before)
    );
    let served = r["now_served"].as_array().unwrap();
    assert_eq!(served.len(), 1);
    assert_eq!(
        (
            n(&served[0]["was_status"]),
            served[0]["was_code"].as_str(),
            served[0]["provider"].as_str(),
            n(&served[0]["requests"])
        ),
        (403, Some("no_allowed_provider"), Some("fr-b"), e.now_served)
    );
    assert!(r["refused_differently"].as_array().unwrap().is_empty());

    let c = &r["cost"];
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
    assert!(
        close(c["old_usd"].as_f64().unwrap(), e.old_usd),
        "{c} vs {}",
        e.old_usd
    );
    assert!(
        close(c["new_usd"].as_f64().unwrap(), e.new_usd),
        "{c} vs {}",
        e.new_usd
    );
    assert_eq!(n(&c["priced"]), e.priced);
    assert_eq!(n(&c["unpriced"]), 0);
    assert_eq!(n(&c["no_usage"]), e.no_usage);
    assert_eq!(n(&r["caveats"][meridian::replay::CAVEAT_TENANT]), e.initech);

    // Streamed: peak memory stays far below the log's size.
    let log_mib = std::fs::metadata(&log).unwrap().len() as f64 / 1048576.0;
    let peak: f64 = stderr
        .split("peak memory ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .expect("--stats prints the peak memory");
    assert!(
        peak < 64.0 && peak < log_mib,
        "peak {peak} MiB for a {log_mib:.1} MiB log"
    );

    // The text form says the same, with examples.
    let out = meridian()
        .arg("replay")
        .arg(&new)
        .arg(&log)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "us-cheap → fr-b: {} requests, e.g. {}",
            e.moved,
            e.moved_examples.join(", ")
        )),
        "{text}"
    );
    assert!(text.contains(&format!(
        "422 personal_data_refused: {} requests",
        e.email_refused
    )));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn replay_reads_stdin_and_explains_bad_input() {
    let dir = std::env::temp_dir().join(format!("meridian-replay-in-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let new = dir.join("new.toml");
    std::fs::write(&new, new_policy()).unwrap();
    let mut log = Vec::new();
    generate(200, &mut log);
    let mut child = meridian()
        .arg("replay")
        .arg(&new)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(&log).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("200 lines"), "{text}");

    // A bad policy and a missing log: exit 2 with the reason.
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "version = 1\n[[providers]]\nid = 3\n").unwrap();
    let out = meridian().arg("replay").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.toml"));
    let out = meridian()
        .arg("replay")
        .arg(&new)
        .arg(dir.join("missing.jsonl"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.jsonl"));
    std::fs::remove_dir_all(&dir).ok();
}

/// `meridian replay` prices a route's fallback to another model of the same provider at that
/// model's prices (issue 37, item 3): under its own policy, a log line whose answer came from
/// the route's second model costs what was billed.
#[test]
fn a_route_fallback_on_the_same_provider_is_priced_at_the_model_that_answered() {
    let dir = std::env::temp_dir().join(format!("meridian-replay-route-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        "version = 1\n[settings]\nallow_anonymous = true\n\
         [[providers]]\nid = \"p\"\nbase_url = \"https://p.example/v1\"\nlocation = \"DE\"\nzdr = true\ntrains_on_inputs = false\n\
         models = { broken = { id = \"up-broken\", input_price = 100.0, output_price = 100.0 }, fast = { id = \"up-fast\", input_price = 2.0, output_price = 4.0 } }\n\
         [[routes]]\nid = \"smart\"\nmodels = [\"broken\", \"fast\"]\n",
    )
    .unwrap();
    // 1,000 input and 500 output tokens at `fast`'s prices: $0.002 + $0.002.
    let billed = (1000.0 * 2.0 + 500.0 * 4.0) / 1e6;
    let line = serde_json::json!({
        "ts_ms": 1_796_083_200_000u64, "request_id": "r-1", "method": "POST",
        "path": "/v1/chat/completions", "status": 200, "model": "smart",
        "country": "DE", "country_source": "header cf-ipcountry", "edge": "not_configured",
        "rules": [], "candidates": ["p"], "excluded": [],
        "attempts": [{"provider": "p", "outcome": "status 503", "ms": 3}, {"provider": "p", "outcome": "ok", "ms": 5}],
        "provider": "p", "served_model": "fast", "jurisdiction": "DE",
        "usage": {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500},
        "cost_usd": billed,
        "facts": {"endpoint": "chat", "stream": false, "input_tokens": 12, "output_tokens": 256,
                  "first": {"provider": "p", "location": "DE"}},
        "duration_ms": 9
    });
    let log = dir.join("meridian.log");
    std::fs::write(&log, format!("{line}\n")).unwrap();
    let o = meridian()
        .args(["replay", "--json"])
        .arg(&policy)
        .arg(&log)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["replayed"], 1, "{v}");
    let (old, new) = (
        v["cost"]["old_usd"].as_f64().unwrap(),
        v["cost"]["new_usd"].as_f64().unwrap(),
    );
    assert!(
        (old - billed).abs() < 1e-12 && (new - billed).abs() < 1e-12,
        "{v}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
