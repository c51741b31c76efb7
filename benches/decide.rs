//! `cargo bench --bench decide`: the pure decision for a 20-provider, 50-rule policy, and what
//! obtaining a policy costs (TOML parse+validate; the built-in policy is static data).
//! Prints figures; asserts nothing about time.

use std::time::Instant;

use meridian::{decide, facts, policy};

mod common;
use common::pct;

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

/// A typical chat request body (about 1 KiB), as the component receives it.
fn request_body() -> Vec<u8> {
    let turns: Vec<serde_json::Value> = (0..8)
        .map(|i| {
            serde_json::json!({
                "role": if i % 2 == 0 { "user" } else { "assistant" },
                "content": "Summarise the attached paragraph in two sentences, keeping names and figures exact."
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "model": "m", "messages": turns, "temperature": 0.2, "max_tokens": 256, "stream": false
    }))
    .unwrap()
}

fn main() {
    let text = big_policy();
    let p = policy::load(&text, "bench").unwrap();
    let headers = vec![("cf-ipcountry".to_string(), "DE".to_string())];
    let mut body = serde_json::Map::new();
    body.insert("model".into(), "m".into());
    let cx = facts::Context {
        location: meridian::location::locate(&p.settings.client, &headers, None, None),
        request_id: "bench".into(),
        endpoint: meridian::routes::Endpoint::Chat,
        tenant: None,
        edge_region: None,
        headers: &headers,
        pii: None,
        unknown_fields: Default::default(),
        injection: false,
        prefix_bounds: Vec::new(),
        rule_headers: p.rules_read_headers(),
    };
    let f = facts::from_request(cx, &mut body).unwrap();

    // `MERIDIAN_DECIDE_CALLS=N`: only N decisions, for an instruction count under callgrind
    // (scripts/bench does this when valgrind is installed): exact, whatever the machine's load.
    if let Some(n) = std::env::var("MERIDIAN_DECIDE_CALLS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        for _ in 0..n {
            std::hint::black_box(decide::decide(&p, std::hint::black_box(&f)));
        }
        return;
    }

    // The decision, interleaved with a baseline every request pays anyway: parsing a 1 KiB chat
    // body with serde_json. Both see the same machine, so their ratio is stable even when the
    // absolute figures are not.
    let raw = request_body();
    let (mut dec, mut base) = (Vec::new(), Vec::new());
    for _ in 0..300 {
        let t = Instant::now();
        for _ in 0..50 {
            std::hint::black_box(decide::decide(&p, std::hint::black_box(&f)));
        }
        dec.push(t.elapsed().as_secs_f64() * 1e6 / 50.0);
        let t = Instant::now();
        for _ in 0..50 {
            std::hint::black_box(
                serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(
                    std::hint::black_box(&raw),
                )
                .unwrap(),
            );
        }
        base.push(t.elapsed().as_secs_f64() * 1e6 / 50.0);
    }
    let d = decide::decide(&p, &f);
    let (dm, bm) = (pct(&mut dec.clone(), 0.5), pct(&mut base.clone(), 0.5));
    println!(
        "decision, 20 providers × 50 rules ({} matched, {} candidates, {} excluded): median {dm:.2} µs, p99 {:.2} µs",
        d.matched_rules.len(),
        d.candidates.len(),
        d.excluded.len(),
        pct(&mut dec, 0.99)
    );
    println!(
        "baseline, serde_json parse of a {} byte chat body: median {bm:.2} µs, p99 {:.2} µs → the decision costs {:.2}× that parse",
        raw.len(),
        pct(&mut base, 0.99),
        dm / bm
    );

    // What obtaining a policy costs: parsing + validating TOML, which a policy given in the
    // `policy` variable pays on every request under WASI 0.2 and once per instance under WASI
    // 0.3. The built-in policy is static data in the component: nothing to obtain.
    for (name, text) in [
        ("default policy", policy::DEFAULT_POLICY.to_string()),
        ("20×50 policy", text),
    ] {
        let mut parse = Vec::new();
        for _ in 0..200 {
            let t = Instant::now();
            std::hint::black_box(policy::load(&text, "x").unwrap());
            parse.push(t.elapsed().as_secs_f64() * 1e6);
        }
        let p = pct(&mut parse, 0.5);
        println!(
            "obtaining the {name} from TOML natively ({} bytes, parse+validate): median {p:.1} µs = {:.0}× the decision's median; built in: static data, 0 µs",
            text.len(),
            p / dm
        );
    }
}
