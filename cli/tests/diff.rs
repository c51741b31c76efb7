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

/// Every combination of privacy flags as the `x-meridian-privacy` header takes it (`None`: no
/// flag), and whether a provider of these policies can serve it (none is self-hosted, so
/// `local-only` never can).
fn flag_combos() -> Vec<(Option<String>, bool)> {
    let names = ["zdr", "no-training", "local-only", "no-data-collection"];
    let mut out = Vec::new();
    for bits in 0..16u32 {
        let set: Vec<&str> = (0..4)
            .filter(|i| bits & (1 << i) != 0)
            .map(|i| names[i])
            .collect();
        let served = !set.contains(&"local-only");
        out.push(((!set.is_empty()).then(|| set.join(", ")), served));
    }
    out
}

/// A merged dimension's values: `None` for `"*"` (all of them), else the one value or the set.
fn values(v: &serde_json::Value) -> Option<Vec<Option<String>>> {
    let one = |v: &serde_json::Value| v.as_str().map(str::to_string);
    match v {
        serde_json::Value::String(s) if s == "*" => None,
        serde_json::Value::Array(a) => Some(a.iter().map(one).collect()),
        other => Some(vec![one(other)]),
    }
}

/// One case of the fact space: country, tenant (`anonymous`), privacy flags, stream, endpoint.
type Case = (String, String, Option<String>, bool, String);

/// Every country of the built-in table, and unknown.
fn countries() -> Vec<String> {
    let mut c: Vec<String> = meridian::policy::places::COUNTRIES
        .iter()
        .map(|(c, _, _)| c.to_string())
        .collect();
    c.push("XX".into());
    c
}

/// The cases a merged change covers, expanded back (`"*"`: every value the space has).
fn expand(ch: &serde_json::Value, endpoints: &[&str]) -> Vec<Case> {
    let tenants: Vec<String> = values(&ch["tenant"])
        .map(|v| {
            v.into_iter()
                .map(|t| t.unwrap_or("anonymous".into()))
                .collect()
        })
        .unwrap_or_else(|| ["anonymous", "acme", "globex"].map(str::to_string).to_vec());
    let flags = values(&ch["privacy"])
        .unwrap_or_else(|| flag_combos().into_iter().map(|(f, _)| f).collect());
    let endpoints: Vec<String> = values(&ch["endpoint"])
        .map(|v| v.into_iter().flatten().collect())
        .unwrap_or_else(|| endpoints.iter().map(|e| e.to_string()).collect());
    let streams: Vec<bool> = match &ch["stream"] {
        serde_json::Value::Bool(b) => vec![*b],
        _ => vec![false, true],
    };
    let mut out = Vec::new();
    for c in ch["countries"].as_array().unwrap() {
        for t in &tenants {
            for f in &flags {
                for s in &streams {
                    for e in &endpoints {
                        out.push((
                            c.as_str().unwrap().to_string(),
                            t.clone(),
                            f.clone(),
                            *s,
                            e.clone(),
                        ));
                    }
                }
            }
        }
    }
    out
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

    // The oracle. Both providers state zero retention and no training, so every combination of
    // privacy flags without `local-only` (no provider is self-hosted: refused under both) is
    // served. Under the
    // old policy `us-b` comes first for everyone. Under the new one: clients in the EU, any
    // caller, get `eu-a` (the new rule); `globex` gets `eu-a` from anywhere else too (its
    // jurisdictions). Nothing else changes.
    let served_flags: Vec<Option<String>> = flag_combos()
        .into_iter()
        .filter(|(_, served)| *served)
        .map(|(f, _)| f)
        .collect();
    let mut want: BTreeSet<Case> = BTreeSet::new();
    for c in &countries() {
        for tenant in ["anonymous", "acme", "globex"] {
            for p in &served_flags {
                for stream in [false, true] {
                    if EU.contains(&c.as_str()) || tenant == "globex" {
                        want.insert((c.clone(), tenant.into(), p.clone(), stream, "chat".into()));
                    }
                }
            }
        }
    }
    assert_eq!(d["changed"], want.len() as u64);
    // Expand the merged changes back into cases.
    let mut got = BTreeSet::new();
    for ch in d["changes"].as_array().unwrap() {
        assert_eq!(ch["old"]["provider"], "us-b", "{ch}");
        assert_eq!(ch["new"]["provider"], "eu-a", "{ch}");
        got.extend(expand(ch, &["chat"]));
    }
    assert_eq!(got, want);
    let (_, text) = run(&dir, &old, &new, false);
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("- ")).collect();
    // Merged into two lines, the larger first: globex outside the EU, and the EU (any
    // caller), each for every combination of flags without local-only.
    assert_eq!(
        lines,
        [
            "- clients outside eu, tenant globex, privacy flags without local-only: served by us-b (US) (rule `us-first`) → served by eu-a (DE) (rule `us-first`)",
            "- clients in eu, privacy flags without local-only: served by us-b (US) (rule `us-first`) → served by eu-a (DE) (rule `eu-stay`, new; rule `us-first`)",
        ],
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The old policy with `us-b` removed, tenant `acme` removed, and messages required to stay in
/// the US.
fn removed() -> String {
    let key = format!("sha256:{}", "02".repeat(32));
    format!(
        "version = 1\nname = \"d\"\n[settings]\nallow_anonymous = true\n\
         [[providers]]\nid = \"eu-a\"\nbase_url = \"https://eu.example/v1\"\nlocation = \"DE\"\nzdr = true\ntrains_on_inputs = false\nmodels = {{ m = \"m-eu\" }}\n\
         [[tenants]]\nid = \"globex\"\nkeys = [\"{key}\"]\n\
         [[rules]]\nid = \"messages-in-us\"\nwhen = {{ endpoint = [\"messages\"] }}\nrequire = {{ jurisdiction = [\"us\"] }}\n\
         [[rules]]\nid = \"us-first\"\nprefer = {{ order = [\"eu-a\"] }}\n"
    )
}

#[test]
fn a_removed_provider_a_removed_tenant_and_an_endpoint_rule() {
    let dir = std::env::temp_dir().join(format!("meridian-diff-rm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (old, new) = (policy("", ""), removed());
    let (code, text) = run(&dir, &old, &new, true);
    assert_eq!(code, 1, "{text}");
    let d: serde_json::Value = serde_json::from_str(&text).unwrap();

    // The oracle, from the two policies' meaning. Endpoints: chat, and messages (a rule names
    // it). Under the old policy every case without local-only is served by us-b first, and
    // every case with it refused. Under the new one, us-b is gone: chat goes to eu-a, and
    // messages, which must stay in the US, is refused. acme's key names no one: its callers
    // are anonymous, which changes every acme case (even a refusal is now an anonymous one).
    let countries = countries();
    let mut want = BTreeSet::new();
    for c in &countries {
        for tenant in ["anonymous", "acme", "globex"] {
            for (flags, served) in flag_combos() {
                for stream in [false, true] {
                    for endpoint in ["chat", "messages"] {
                        if served || tenant == "acme" {
                            want.insert((
                                c.clone(),
                                tenant.to_string(),
                                flags.clone(),
                                stream,
                                endpoint.to_string(),
                            ));
                        }
                    }
                }
            }
        }
    }
    // Besides plain requests, the space has one that asks for the removed provider alone
    // (`provider.only`): served by it before, refused now (403), whatever the endpoint.
    let only_us_b = r#"provider {"only":["us-b"]}"#;
    assert_eq!(d["cases"], countries.len() as u64 * 3 * 16 * 2 * 2 * 2);
    assert_eq!(d["changed"], 2 * want.len() as u64);
    let (mut got, mut got_only) = (BTreeSet::new(), BTreeSet::new());
    for ch in d["changes"].as_array().unwrap() {
        let cases = expand(ch, &["chat", "messages"]);
        let endpoints: BTreeSet<&str> = cases.iter().map(|c| c.4.as_str()).collect();
        let acme = cases.iter().all(|c| c.1 == "acme");
        // What each side says, checked against the oracle's story.
        let new_side = if acme { &ch["new"]["then"] } else { &ch["new"] };
        if acme {
            assert_eq!(ch["new"]["outcome"], "as_anonymous", "{ch}");
        }
        let requests = values(&ch["request"]).unwrap_or_else(|| vec![None, Some(only_us_b.into())]);
        for r in &requests {
            let only = r.as_deref() == Some(only_us_b);
            assert!(r.is_none() || only, "{ch}");
            for e in &endpoints {
                match (ch["old"]["outcome"].as_str(), *e) {
                    (Some("served"), _) if only => assert_eq!(new_side["status"], 403, "{ch}"),
                    (Some("served"), "chat") => assert_eq!(new_side["provider"], "eu-a", "{ch}"),
                    (Some("served"), _) => assert_eq!(new_side["status"], 451, "{ch}"),
                    (Some("refused"), _) => assert!(acme, "{ch}"),
                    other => panic!("{other:?}: {ch}"),
                }
            }
            if only {
                got_only.extend(cases.iter().cloned());
            } else {
                got.extend(cases.iter().cloned());
            }
        }
    }
    assert_eq!(got, want);
    assert_eq!(got_only, want);
    // Readable: six lines for plain requests (non-acme chat and messages; acme served chat and
    // messages, and acme refused under both, per endpoint: the new refusal names the new rule
    // for messages), and the served ones again for requests naming the removed provider (the
    // refusals are the same for both, and merge).
    let (_, text) = run(&dir, &old, &new, false);
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("- ")).collect();
    assert_eq!(lines.len(), 10, "{text}");
    // acme's refusals stay refusals: the line says why that is still a change.
    let same = lines
        .iter()
        .filter(|l| l.contains("tenant acme") && l.contains("privacy flags with local-only"))
        .collect::<Vec<_>>();
    assert_eq!(same.len(), 2, "{text}");
    assert!(
        same.iter()
            .all(|l| l.ends_with("(the same answer, but the caller is now anonymous: the tenant's limits, privacy floor and name in the audit no longer apply)")),
        "{text}"
    );
    assert_eq!(
        lines.iter().filter(|l| l.contains(only_us_b)).count(),
        4,
        "{text}"
    );
    assert!(text.contains("- any country, tenants anonymous, globex, privacy flags without local-only, endpoint chat, plain requests: served by us-b (US) (rule `us-first`) → served by eu-a (DE) (rule `us-first`)"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every kind of condition a rule can state, added as a new rule: each is reported as a change
/// (exit 1), and where the condition is on the request's shape the change names it.
#[test]
fn a_new_rule_on_any_condition_is_a_change() {
    let dir = std::env::temp_dir().join(format!("meridian-diff-each-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = |n: u8| format!("sha256:{}", format!("{n:02x}").repeat(32));
    let base = |extra: &str, providers_extra: &str, order: &str| {
        format!(
            "version = 1\nname = \"each\"\n[settings]\nallow_anonymous = true\n\
             [settings.client]\nplatform = \"cloudflare\"\nedge_secret = {{ header = \"x-edge\", secret = \"edge_secret\" }}\n\
             [[providers]]\nid = \"a\"\nbase_url = \"https://a.example/v1\"\nlocation = \"DE\"\nzdr = true\ntrains_on_inputs = false\ncapabilities = [\"web_search\", \"remote_media\"]\nmodels = {{ m = \"m-a\" }}\n\
             [[providers]]\nid = \"b\"\nbase_url = \"https://b.example/v1\"\nlocation = \"US\"\nzdr = true\ntrains_on_inputs = false\nmodels = {{ m = \"m-b\" }}\n\
             {providers_extra}\
             [[tenants]]\nid = \"acme\"\nkeys = [\"{}\"]\n\
             [[tenants]]\nid = \"web\"\nkeys = [\"{}\"]\norigins = [\"https://app.example\"]\n\
             [pii.custom]\nticket = 'TICKET-[0-9]+'\n\
             {extra}\
             [[rules]]\nid = \"order\"\nprefer = {{ order = [{order}] }}\n",
            key(1),
            key(2),
        )
    };
    let old = base("", "", "\"a\", \"b\"");
    // (the condition, a word the change must show, or "" where the base product shows it)
    let cases: &[(&str, &str)] = &[
        ("client_jurisdiction = [\"eu\"]", ""),
        ("client_country = [\"FR\"]", ""),
        ("edge_region = [\"eu-west-1\"]", ""),
        ("tenant = [\"acme\"]", ""),
        ("anonymous = true", ""),
        ("model = [\"m*\"]", ""),
        ("privacy = [\"zdr\"]", ""),
        ("stream = true", ""),
        ("endpoint = [\"messages\"]", ""),
        ("pii = [\"ticket\"]", ""),
        ("browser = true", ""),
        ("header = { \"x-team\" = \"red\" }", "header x-team: red"),
        ("edge_verified = true", "edge verified"),
        ("input_tokens = { min = 5000 }", "input tokens"),
        ("tools = true", "with tools"),
        ("media = true", "with media"),
    ];
    for (cond, word) in cases {
        let new = base(
            &format!("[[rules]]\nid = \"new\"\nwhen = {{ {cond} }}\nrequire = {{ providers = [\"b\"] }}\n"),
            "",
            "\"a\", \"b\"",
        );
        let (code, text) = run(&dir, &old, &new, false);
        assert_eq!(code, 1, "`{cond}` reported no change:\n{text}");
        assert!(
            text.contains(word),
            "`{cond}`: the change does not say `{word}`:\n{text}"
        );
    }
    // A rule narrowing capabilities: requests that use one the rule withdraws change.
    let new = base(
        "[[rules]]\nid = \"new\"\nrequire = { capabilities = [\"remote_media\"] }\n",
        "",
        "\"a\", \"b\"",
    );
    let (code, text) = run(&dir, &old, &new, false);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("using web_search"), "{text}");
    // A provider added behind the others is first for no one: only a request that names it
    // (`provider.only`) sees it.
    let new = base(
        "",
        "[[providers]]\nid = \"c\"\nbase_url = \"https://c.example/v1\"\nlocation = \"FR\"\nzdr = true\ntrains_on_inputs = false\nmodels = { m = \"m-c\" }\n",
        "\"a\", \"b\", \"c\"",
    );
    let (code, text) = run(&dir, &old, &new, false);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains(r#"provider {"only":["c"]}"#), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Guards are part of what a policy does: a built-in guard added to a rule shows who judges the
/// requests it matches; a guard in the US that EU requests may not be sent, failing closed,
/// refuses every one of them (and only them); failing open, it is skipped.
#[test]
fn guards_added_to_a_rule_are_changes_diff_names() {
    let dir = std::env::temp_dir().join(format!("meridian-diff-guards-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let eu_rule = "[[rules]]\nid = \"eu\"\nwhen = { client_jurisdiction = [\"eu\"] }\nrequire = { jurisdiction = [\"eu\"] }\n";
    let old = policy(eu_rule, "");
    let guards = "[[guards]]\nid = \"injection\"\nkind = \"injection\"\nwire = \"builtin\"\n\
        [[guards]]\nid = \"mod-us\"\nkind = \"moderation\"\nwire = \"openai_moderation\"\nurl = \"https://api.openai.com/v1\"\nlocation = \"US\"\nretention_days = 0\ntrains_on_inputs = false\n";
    let with = |uses: &str| policy(&format!("{guards}{eu_rule}{uses}"), "");

    let (code, text) = run(
        &dir,
        &old,
        &with("[[rules.guards]]\nguard = \"injection\"\n"),
        false,
    );
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("judged by injection:input"), "{text}");

    let (code, json) = run(
        &dir,
        &old,
        &with("[[rules.guards]]\nguard = \"mod-us\"\n"),
        true,
    );
    assert_eq!(code, 1, "{json}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let changes = v["changes"].as_array().unwrap();
    assert!(!changes.is_empty(), "{json}");
    for c in changes {
        assert_eq!(c["new"]["outcome"], "refused", "{c}");
        assert_eq!(c["new"]["code"], "guardrail_not_allowed", "{c}");
        // Only EU clients meet the rule.
        let countries = values(&c["countries"]).expect("a change names its countries");
        for country in countries.into_iter().flatten() {
            assert!(EU.contains(&country.as_str()), "{country} in {c}");
        }
    }

    let (code, text) = run(
        &dir,
        &old,
        &with("[[rules.guards]]\nguard = \"mod-us\"\nfail = \"open\"\n"),
        false,
    );
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("judged by mod-us:input (skipped)"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A provider that now keeps data elsewhere (its `storage`) changes every case it serves first,
/// shown with where it processes and where it keeps data; nothing else changes.
#[test]
fn a_provider_keeping_data_elsewhere_is_a_change_to_every_case_it_serves() {
    let dir = std::env::temp_dir().join(format!("meridian-diff-storage-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let old = policy("", "");
    let new = old.replace(
        "location = \"US\"\nzdr = true",
        "location = \"US\"\nstorage = \"IE\"\ntransfer_safeguard = \"dpf\"\nzdr = true",
    );
    assert_ne!(old, new);
    let (code, text) = run(&dir, &old, &new, false);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("served by us-b (US; keeps data in IE)"),
        "{text}"
    );
    assert!(text.contains("served by us-b (US)"), "{text}");
    assert!(!text.contains("eu-a"), "only us-b's cases change: {text}");
    std::fs::remove_dir_all(&dir).unwrap();
}
