//! `meridian diff`: a policy against itself changes nothing; a known change (a residency rule
//! added, a tenant's jurisdictions narrowed) produces exactly the expected lines, and the cases
//! they cover are exactly those an oracle written here from the two policies' meaning expects.

use std::collections::BTreeSet;
use std::process::Command;

const EU: [&str; 27] = [
    "AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GR", "HR", "HU", "IE", "IT",
    "LT", "LU", "LV", "MT", "NL", "PL", "PT", "RO", "SE", "SI", "SK",
];

fn policy(extra_rule: &str, globex_jurisdictions: &str) -> String {
    let key = |n: u8| format!("sha256:{}", format!("{n:02x}").repeat(32));
    format!(
        "version = 1\nname = \"d\"\n[settings]\nallow_anonymous = true\n\
         [[providers]]\nid = \"us-b\"\nbase_url = \"https://us.example/v1\"\nlocation = \"US\"\nzdr = true\ntrains_on_inputs = false\nmodels = {{ m = \"m-us\" }}\n\
         [[providers]]\nid = \"eu-a\"\nbase_url = \"https://eu.example/v1\"\nlocation = \"DE\"\nzdr = true\ntrains_on_inputs = false\nmodels = {{ m = \"m-eu\" }}\n\
         [[tenants]]\nid = \"acme\"\nkeys = [\"{}\"]\n\
         [[tenants]]\nid = \"globex\"\nkeys = [\"{}\"]\n{globex_jurisdictions}\n\
         {extra_rule}\
         [[rules]]\nid = \"us-first\"\nprefer = {{ order = [\"us-b\", \"eu-a\"] }}\n",
        key(1),
        key(2)
    )
}

fn run(dir: &std::path::Path, old: &str, new: &str, json: bool) -> (i32, String) {
    std::fs::write(dir.join("old.toml"), old).unwrap();
    std::fs::write(dir.join("new.toml"), new).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meridian"));
    cmd.arg("diff")
        .arg(dir.join("old.toml"))
        .arg(dir.join("new.toml"));
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().unwrap();
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
    )
}

#[test]
fn a_policy_against_itself_changes_nothing_and_a_known_change_is_exactly_its_lines() {
    let dir = std::env::temp_dir().join(format!("meridian-diff-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let old = policy("", "");
    let (code, text) = run(&dir, &old, &old, false);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("no change"), "{text}");

    let new = policy(
        "[[rules]]\nid = \"eu-stay\"\nwhen = { client_jurisdiction = [\"eu\"] }\nrequire = { jurisdiction = [\"eu\"] }\n",
        "jurisdictions = [\"eu\"]",
    );
    let (code, text) = run(&dir, &old, &new, true);
    assert_eq!(code, 1, "{text}");
    let d: serde_json::Value = serde_json::from_str(&text).unwrap();

    // The oracle. Both providers state zero retention and no training, so every privacy flag
    // but `local-only` (no provider is self-hosted: refused under both) is served. Under the
    // old policy `us-b` comes first for everyone. Under the new one: clients in the EU, any
    // caller, get `eu-a` (the new rule); `globex` gets `eu-a` from anywhere else too (its
    // jurisdictions). Nothing else changes.
    let mut countries: Vec<String> = meridian::policy::places::COUNTRIES
        .iter()
        .map(|(c, _, _)| c.to_string())
        .collect();
    countries.push("XX".into());
    let served_flags = [
        None,
        Some("zdr"),
        Some("no-training"),
        Some("no-data-collection"),
    ];
    let mut want: BTreeSet<(String, String, Option<String>, bool)> = BTreeSet::new();
    for c in &countries {
        for tenant in ["anonymous", "acme", "globex"] {
            for p in served_flags {
                for stream in [false, true] {
                    if EU.contains(&c.as_str()) || tenant == "globex" {
                        want.insert((c.clone(), tenant.into(), p.map(str::to_string), stream));
                    }
                }
            }
        }
    }
    assert_eq!(d["changed"], want.len() as u64);
    // Expand the merged changes back into cases.
    let all_tenants = ["anonymous", "acme", "globex"];
    let all_flags: Vec<Option<&str>> = [None]
        .into_iter()
        .chain(["zdr", "no-training", "local-only", "no-data-collection"].map(Some))
        .collect();
    let mut got = BTreeSet::new();
    for ch in d["changes"].as_array().unwrap() {
        assert_eq!(ch["old"]["provider"], "us-b", "{ch}");
        assert_eq!(ch["new"]["provider"], "eu-a", "{ch}");
        let tenants: Vec<&str> = match &ch["tenant"] {
            serde_json::Value::String(t) if t == "*" => all_tenants.to_vec(),
            serde_json::Value::String(t) => vec![t.as_str()],
            serde_json::Value::Null => vec!["anonymous"],
            other => panic!("{other}"),
        };
        let flags: Vec<Option<&str>> = match &ch["privacy"] {
            serde_json::Value::String(t) if t == "*" => all_flags.clone(),
            serde_json::Value::String(t) => vec![Some(t.as_str())],
            serde_json::Value::Null => vec![None],
            other => panic!("{other}"),
        };
        let streams: Vec<bool> = match &ch["stream"] {
            serde_json::Value::Bool(b) => vec![*b],
            _ => vec![false, true],
        };
        for c in ch["countries"].as_array().unwrap() {
            for t in &tenants {
                for f in &flags {
                    for s in &streams {
                        got.insert((
                            c.as_str().unwrap().to_string(),
                            t.to_string(),
                            f.map(str::to_string),
                            *s,
                        ));
                    }
                }
            }
        }
    }
    assert_eq!(got, want);
    // Merged: per served privacy flag, one line for the EU (any caller) and one for globex
    // elsewhere.
    let (_, text) = run(&dir, &old, &new, false);
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("- ")).collect();
    assert_eq!(lines.len(), 8, "{text}");
    for flag in [
        "no privacy flag",
        "privacy zdr",
        "privacy no-training",
        "privacy no-data-collection",
    ] {
        assert!(
            lines.iter().any(|l| l
                .starts_with(&format!("- clients in eu, {flag}: served by us-b (US)"))
                && l.contains("→ served by eu-a (DE) (rule `eu-stay`, new; rule `us-first`)")),
            "{flag}: {text}"
        );
        assert!(
            lines.iter().any(|l| l.starts_with("- clients in 220 countries")
                && l.contains(&format!("tenant globex, {flag}: served by us-b (US) (rule `us-first`) → served by eu-a (DE) (rule `us-first`)"))),
            "{flag}: {text}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
