//! The `meridian` command, run as a user runs it, on the repository's policies.

use std::path::PathBuf;
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn meridian(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meridian"))
        .current_dir(root())
        .args(args)
        .output()
        .expect("run meridian")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

/// A copy of an example policy whose tenant `tenant` has the key `key` (the examples ship only
/// hashes of keys nobody knows), written where the tests keep their files; its path.
fn example_with_key(example: &str, tenant: &str, key: &str) -> String {
    use sha2::Digest;
    let text = std::fs::read_to_string(root().join("policies/examples").join(example)).unwrap();
    let at = text
        .find(&format!("id = \"{tenant}\"\nkeys = ["))
        .unwrap_or_else(|| panic!("{example} has no tenant `{tenant}`"));
    let start = at + text[at..].find("keys = [").unwrap();
    let end = start + text[start..].find(']').unwrap() + 1;
    let hash = hex_of(&sha2::Sha256::digest(key.as_bytes()));
    let text = format!(
        "{}keys = [\"sha256:{hash}\"]{}",
        &text[..start],
        &text[end..]
    );
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{tenant}-{example}"));
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn policy_files() -> Vec<String> {
    let mut v = vec!["policies/default.toml".to_string()];
    for e in std::fs::read_dir(root().join("policies/examples")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            v.push(format!(
                "policies/examples/{}",
                p.file_name().unwrap().to_string_lossy()
            ));
        }
    }
    v.sort();
    v
}

/// `meridian <command>` on every shipped policy.
fn on_shipped_policies(command: &str) -> (Vec<String>, Output) {
    let files = policy_files();
    let args: Vec<&str> = std::iter::once(command)
        .chain(files.iter().map(String::as_str))
        .collect();
    let o = meridian(&args);
    (files, o)
}

#[test]
fn check_accepts_every_shipped_policy() {
    let (files, o) = on_shipped_policies("check");
    assert!(o.status.success(), "{}", stderr(&o));
    for f in &files {
        assert!(stdout(&o).contains(&format!("ok: {f}: ")), "{}", stdout(&o));
    }
}

#[test]
fn check_prints_every_error_with_its_position_and_fails() {
    for name in [
        "references",
        "shapes",
        "syntax",
        "typos",
        "credential-headers",
        "reserved-tenants",
    ] {
        let file = format!("tests/invalid/{name}.toml");
        let o = meridian(&["check", &file]);
        assert_eq!(o.status.code(), Some(1), "{name}");
        let expected =
            std::fs::read_to_string(root().join(format!("tests/invalid/{name}.expected"))).unwrap();
        // The .expected files name the file without its directory.
        let got = stderr(&o).replace("tests/invalid/", "");
        assert_eq!(got.trim_end(), expected.trim_end(), "{name}");
    }
}

#[test]
fn test_runs_the_cases_and_fails_on_a_wrong_expectation() {
    let (_, o) = on_shipped_policies("test");
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains(" 0 failed, 0 invalid policies"),
        "{}",
        stdout(&o)
    );

    let text = std::fs::read_to_string(root().join("policies/default.toml")).unwrap();
    let broken = text.replacen("expect = [\"local\"]", "expect = [\"groq\", \"local\"]", 1);
    assert_ne!(broken, text);
    let dir = std::env::temp_dir().join(format!("meridian-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("broken.toml");
    std::fs::write(&path, broken).unwrap();
    let o = meridian(&["test", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("FAIL  an anonymous caller gets the keyless self-hosted engine"),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains("expected [\"groq\", \"local\"], got [\"local\"]"),
        "{}",
        stdout(&o)
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn explain_gives_the_decision_as_text_and_json() {
    let o = meridian(&[
        "explain",
        "policies/default.toml",
        "--model",
        "llama-3.1-8b",
        "--country",
        "DE",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let t = stdout(&o);
    assert!(
        t.contains("from country DE (jurisdictions: eea, eu)"),
        "{t}"
    );
    assert!(t.contains("  1. local as `llama3.1:8b`"), "{t}");
    assert!(!t.contains("  2. "), "{t}");
    assert!(t.contains("excluded groq: rule `eea-residency`"), "{t}");
    assert!(
        t.contains("excluded mistral: anonymous access needs the operator's provider key"),
        "{t}"
    );
    assert!(t.contains("plan: attempt timeout 30000 ms"), "{t}");

    let eu = example_with_key("eu-residency.toml", "app", "sk-test-app-key");
    let o = meridian(&[
        "explain",
        &eu,
        "--key",
        "sk-test-app-key",
        "--model",
        "gpt-4o",
        "--country",
        "FR",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["decision"]["refusal"]["status"], 451);
    assert_eq!(v["decision"]["candidates"], serde_json::json!([]));
    assert_eq!(v["decision"]["excluded"][0]["provider"], "openai");
    assert_eq!(v["facts"]["country"], "FR");

    // Request flags apply as in the component: local-only leaves the self-hosted engine.
    let o = meridian(&[
        "explain",
        "policies/default.toml",
        "--model",
        "llama-3.1-8b",
        "--privacy",
        "local-only",
        "--json",
    ]);
    let v = json(&o);
    let order: Vec<&str> = v["decision"]["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["provider"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["local"]);

    // A request the component would refuse before routing is reported, with status 2.
    let o = meridian(&[
        "explain",
        "policies/default.toml",
        "--model",
        "llama-3.1-8b",
        "--privacy",
        "everything",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("400"), "{}", stderr(&o));
}

#[test]
fn check_warns_about_paid_anonymous_access_and_unknown_countries() {
    let dir = std::env::temp_dir().join(format!("meridian-cli-warn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("warn.toml");
    std::fs::write(
        &path,
        "version = 1\n[settings]\nallow_anonymous = \"paid\"\n[settings.client]\nplatform = \"custom\"\ncountry_header = \"cf-ipcountry\"\naddress_header = \"x-real-ip\"\n\
         [[providers]]\nid = \"a\"\nbase_url = \"https://a.example/v1\"\nlocation = \"DE\"\nmodels = { \"m\" = \"m\" }\n\
         [[rules]]\nid = \"eu\"\nwhen = { client_jurisdiction = [\"eu\"] }\nrequire = { jurisdiction = [\"eu\"] }\n",
    )
    .unwrap();
    let o = meridian(&["check", path.to_str().unwrap()]);
    assert!(
        o.status.success(),
        "warnings do not fail the check: {}",
        stderr(&o)
    );
    let e = stderr(&o);
    assert!(
        e.contains("warning: `allow_anonymous = \"paid\"` lets anyone"),
        "{e}"
    );
    assert!(
        e.contains(
            "warning: this source trusts headers of more than one platform (cloudflare, vercel)"
        ),
        "{e}"
    );
    assert!(
        e.contains("warning: residency rules apply to clients whose country is known, but no rule decides for clients whose country is unknown"),
        "{e}"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn schema_and_hash_key() {
    let o = meridian(&["schema"]);
    assert!(o.status.success());
    let schema = json(&o);
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );

    // The line to paste into `keys`: sha256 of the key, computed here independently.
    let o = meridian(&["hash-key", "sk-my-own-key"]);
    let line = stdout(&o);
    use sha2::Digest;
    let want = format!("sha256:{}", hex_of(&sha2::Sha256::digest(b"sk-my-own-key")));
    assert_eq!(line.trim(), want);
    let mut child = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .arg("hash-key")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"sk-my-own-key\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(stdout(&o), line, "stdin and argument give the same hash");
}

#[test]
fn explain_shows_personal_data_found_in_the_body() {
    let body = r#"{"messages":[{"role":"user","content":"Mail jane@example.com about DE89370400440532013000"}]}"#;
    let pd = example_with_key("personal-data.toml", "app", "sk-test-app-key");
    let args = [
        "explain",
        &pd,
        "--key",
        "sk-test-app-key",
        "--model",
        "gpt-4o-mini",
        "--country",
        "US",
        "--body",
        body,
    ];
    let o = meridian(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let t = stdout(&o);
    assert!(
        t.contains("personal data in the prompt: email ×1, iban ×1; redacted before forwarding (email), restored in the answer"),
        "{t}"
    );
    assert!(t.contains("  1. local-de as"), "{t}");
    assert!(!t.contains("  2. "), "{t}");
    // Kinds and counts, never the values.
    assert!(
        !t.contains("jane@example.com") && !t.contains("DE8937"),
        "{t}"
    );

    let mut json_args = args.to_vec();
    json_args.push("--json");
    let v = json(&meridian(&json_args));
    assert_eq!(
        v["decision"]["pii"],
        serde_json::json!({"found": {"email": 1, "iban": 1}, "action": "redacted", "redact": ["email"], "restore": true})
    );
    assert!(!v.to_string().contains("jane@example.com"));

    // A card number: refused with 422, the kind named, the value not.
    let o = meridian(&[
        "explain",
        &pd,
        "--key",
        "sk-test-app-key",
        "--model",
        "gpt-4o-mini",
        "--body",
        r#"{"messages":[{"role":"user","content":"charge 4111 1111 1111 1111"}]}"#,
    ]);
    let t = stdout(&o);
    assert!(t.contains("refused with 422 personal_data_refused"), "{t}");
    assert!(t.contains("(card; rule `no-card-numbers`)"), "{t}");
    assert!(!t.contains("4111 1111") && !t.contains("41111111"), "{t}");
}

/// Writes a policy text where the tests keep their files; its path.
fn policy_file(name: &str, text: &str) -> String {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

const BASE: &str = "version = 1\n[[providers]]\nid = \"p\"\nbase_url = \"https://p.example/v1\"\nlocation = \"DE\"\ntrains_on_inputs = false\nretention_days = 0\nmodels = { m = \"m\" }\n";

#[test]
fn check_warns_about_what_is_valid_but_unsafe_and_strict_fails_on_it() {
    let clean = policy_file("clean.toml", BASE);
    let o = meridian(&["check", "--strict", &clean]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stderr(&o), "", "no warning for a careful policy");

    let cases: [(&str, String, &str); 4] = [
        (
            "cdn.toml",
            // `[settings.client]` comes before the providers' tables.
            format!(
                "version = 1\n[settings.client]\nplatform = \"cloudflare\"\n{}",
                &BASE["version = 1\n".len()..]
            ),
            "without an edge secret",
        ),
        (
            "http-key.toml",
            BASE.replace("https://p.example/v1", "http://p.example/v1")
                .replace("models =", "key_secret = \"p_key\"\nmodels ="),
            "over plain `http://`",
        ),
        (
            "unstated.toml",
            BASE.replace("trains_on_inputs = false\nretention_days = 0\n", ""),
            "does not state `trains_on_inputs` or `retention_days`",
        ),
        (
            "paid.toml",
            BASE.replace(
                "version = 1\n",
                "version = 1\n[settings]\nallow_anonymous = \"paid\"\n",
            ),
            "spend the providers' keys",
        ),
    ];
    for (name, text, words) in cases {
        let f = policy_file(name, &text);
        let o = meridian(&["check", &f]);
        assert!(
            o.status.success(),
            "{name}: a warning is not an error: {}",
            stderr(&o)
        );
        assert!(stderr(&o).contains(words), "{name}: {}", stderr(&o));
        let o = meridian(&["check", "--strict", &f]);
        assert!(!o.status.success(), "{name}: --strict fails on warnings");
        assert!(
            stderr(&o).contains("--strict fails on warnings"),
            "{}",
            stderr(&o)
        );
    }
    // Loopback may carry a key in clear (a local engine behind the same host).
    let local = policy_file(
        "loopback.toml",
        &BASE
            .replace("https://p.example/v1", "http://127.0.0.1:8000/v1")
            .replace("models =", "key_secret = \"p_key\"\nmodels ="),
    );
    let o = meridian(&["check", "--strict", &local]);
    assert!(o.status.success(), "{}", stderr(&o));
    // With an edge secret the CDN profile is quiet.
    let cdn = policy_file(
        "cdn-secret.toml",
        &format!("version = 1\n[settings.client]\nplatform = \"cloudflare\"\nedge_secret = {{ header = \"x-edge\", secret = \"edge_secret\" }}\n{}", &BASE["version = 1\n".len()..]),
    );
    let o = meridian(&["check", "--strict", &cdn]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn keys_published_in_meridians_own_examples_are_refused() {
    use sha2::Digest;
    for key in [
        "sk-demo-app",
        "sk-demo-team",
        "sk-demo-free",
        "sk-demo-clinic",
    ] {
        let hash = hex_of(&sha2::Sha256::digest(key.as_bytes()));
        let f = policy_file(
            &format!("{key}.toml"),
            &format!("{BASE}[[tenants]]\nid = \"t\"\nkeys = [\"sha256:{hash}\"]\n"),
        );
        let o = meridian(&["check", &f]);
        assert!(!o.status.success(), "{key} is refused");
        assert!(
            stderr(&o).contains("published in Meridian's own examples"),
            "{}",
            stderr(&o)
        );
        assert!(stderr(&o).contains("meridian hash-key"), "{}", stderr(&o));
    }
    // No example in the repository carries a key whose plaintext is written anywhere in it: every
    // tenant key hash in the examples is compared with every word of the repository's text.
    let mut words = std::collections::BTreeSet::new();
    let mut texts = vec![root().join("README.md")];
    for dir in [
        "docs",
        "policies",
        "policies/examples",
        "tests",
        "cli/tests",
    ] {
        for e in std::fs::read_dir(root().join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() {
                texts.push(p);
            }
        }
    }
    for t in &texts {
        let text = std::fs::read_to_string(t).unwrap_or_default();
        for w in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_')) {
            if !w.is_empty() {
                words.insert(hex_of(&sha2::Sha256::digest(w.as_bytes())));
            }
        }
    }
    for f in policy_files() {
        let text = std::fs::read_to_string(root().join(&f)).unwrap();
        for h in text.split("sha256:").skip(1).map(|r| &r[..64]) {
            assert!(
                !words.contains(h),
                "{f}: a tenant key's plaintext is in the repository"
            );
        }
    }
}

#[test]
fn explain_shows_what_the_request_asks_a_provider_to_do() {
    let explain = |content: &str| {
        let body = format!(r#"{{"messages":[{{"role":"user","content":[{content}]}}]}}"#);
        let args = [
            "explain",
            "policies/default.toml",
            "--model",
            "llama-3.1-8b",
            "--country",
            "DE",
            "--body",
            &body,
        ];
        let o = meridian(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
    };
    let t = explain(r#"{"type":"image_url","image_url":{"url":"http://10.0.0.1/x.png"}}"#);
    assert!(
        t.contains("excluded local: request uses `remote_media`")
            && t.contains("capabilities = [\"remote_media\"]"),
        "{t}"
    );
    assert!(t.contains("refused with 403 capability_not_granted"), "{t}");
    // An inline image needs no grant.
    let t = explain(r#"{"type":"image_url","image_url":{"url":"data:image/png;base64,AA=="}}"#);
    assert!(t.contains("  1. local as"), "{t}");
}

#[test]
fn check_notes_a_policy_changed_since_git_head() {
    let dir = std::env::temp_dir().join(format!("meridian-check-git-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let git = |args: &[&str]| {
        let o = Command::new("git")
            .current_dir(&dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .output()
            .expect("git");
        assert!(o.status.success(), "git {args:?}: {}", stderr(&o));
    };
    let policy = std::fs::read_to_string(root().join("policies/default.toml")).unwrap();
    let file = dir.join("p.toml");
    std::fs::write(&file, &policy).unwrap();
    git(&["init", "-q"]);
    git(&["add", "p.toml"]);
    git(&["commit", "-qm", "policy"]);
    let check = || {
        Command::new(env!("CARGO_BIN_EXE_meridian"))
            .arg("check")
            .arg(&file)
            .output()
            .unwrap()
    };
    // Unchanged: no note.
    assert!(!stderr(&check()).contains("note:"), "{}", stderr(&check()));
    // Changed (the digest is of the text, as the audit names it): both digests, and the
    // commands that show what the change does.
    std::fs::write(
        &file,
        policy.replacen("[[providers]]", "[[tenants]]\nid = \"new-team\"\nkeys = [\"sha256:5555555555555555555555555555555555555555555555555555555555555555\"]\n\n[[providers]]", 1),
    )
    .unwrap();
    let o = check();
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("changed since git HEAD (digest "), "{err}");
    assert!(err.contains("meridian diff /tmp/old.toml"), "{err}");
    assert!(err.contains("meridian replay"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `meridian compile` prints the compiled form of a valid policy, which reads back as that
/// policy; an invalid policy prints nothing and exits 2.
#[test]
fn compile_writes_a_form_that_reads_back_and_refuses_an_invalid_policy() {
    for file in [
        "policies/default.toml",
        "policies/examples/cost-first.toml",
        "policies/examples/eu-residency.toml",
        "policies/examples/personal-data.toml",
        "policies/examples/privacy-first.toml",
        "policies/examples/self-hosted-pool.toml",
    ] {
        let o = meridian(&["compile", file]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let text = stdout(&o);
        assert!(
            text.starts_with(meridian::policy::compiled::PREFIX),
            "{text:.80}"
        );
        let back = meridian::policy::compiled::load_any(&text, "<stdout>").unwrap();
        let toml = std::fs::read_to_string(root().join(file)).unwrap();
        let original = meridian::policy::load(&toml, file).unwrap();
        assert_eq!(back.version_label(), original.version_label(), "{file}");
        // Settings outside serde's form of the model (receipts, the record, stream_events).
        assert_eq!(
            format!("{:?}", back.settings),
            format!("{:?}", original.settings),
            "{file}"
        );
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::to_value(&original).unwrap(),
            "{file}"
        );
    }
    let bad = meridian(&["compile", "tests/invalid/credential-headers.toml"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stdout(&bad).is_empty());
}

/// `meridian check --manifest`: every host the policy sends to (each replica of a pool, each
/// provider, each external guard) must be in the component's `allowed_outbound_hosts`; a
/// missing one fails the check and names the entry to add.
#[test]
fn check_with_a_manifest_names_every_destination_it_does_not_allow() {
    // The shipped manifest allows exactly the default policy's hosts.
    let o = meridian(&["check", "--manifest", "spin.toml", "policies/default.toml"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let manifest = |hosts: &[&str]| {
        let list: Vec<String> = hosts.iter().map(|h| format!("\"{h}\"")).collect();
        let path = dir.join(format!("spin-{}.toml", hosts.len()));
        std::fs::write(
            &path,
            format!(
                "spin_manifest_version = 2\n[application]\nname = \"m\"\n[component.meridian]\nsource = \"m.wasm\"\nallowed_outbound_hosts = [{}]\n",
                list.join(", ")
            ),
        )
        .unwrap();
        path.to_string_lossy().into_owned()
    };
    let pool = "policies/examples/self-hosted-pool.toml";
    let all = manifest(&[
        "http://vllm-de-1.internal:8000",
        "http://vllm-de-2.internal:8000",
        "http://vllm-fr-1.internal:8000",
        "http://vllm-us-1.internal:8000",
        "https://eu.api.openai.com",
    ]);
    let o = meridian(&["check", "--manifest", &all, pool]);
    assert!(o.status.success(), "{}", stderr(&o));
    // One replica missing: the check fails and says which, and what to add. The metrics URL
    // (another port) is the scraper's, not the component's: never asked for.
    let some = manifest(&[
        "http://vllm-de-1.internal:8000",
        "http://vllm-de-2.internal:8000",
        "http://vllm-fr-1.internal:8000",
        "https://eu.api.openai.com",
    ]);
    let o = meridian(&["check", "--manifest", &some, pool]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("provider `home` replica `us-1`: http://vllm-us-1.internal:8000/v1 is not in component `meridian`'s allowed_outbound_hosts: add \"http://vllm-us-1.internal:8000\""),
        "{e}"
    );
    assert!(!e.contains("9090"), "{e}");
    assert!(!e.contains("de-1"), "{e}");
    // Wildcards match as Spin's do.
    let wild = manifest(&["http://*.internal:8000", "https://*.openai.com"]);
    let o = meridian(&["check", "--manifest", &wild, pool]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// `meridian explain` on a pool: the replicas this prompt may go to, in the order its prefix
/// gives them, each with where it processes data; `meridian test` checks them per case.
#[test]
fn explain_and_test_show_a_pools_replicas_per_place() {
    let pool = example_with_key("self-hosted-pool.toml", "app", "sk-test-app-key");
    let explain = |country: &str| {
        let o = meridian(&[
            "explain",
            &pool,
            "--key",
            "sk-test-app-key",
            "--model",
            "llama-3.1-8b",
            "--country",
            country,
            "--body",
            r#"{"messages":[{"role":"user","content":"where is my order?"}]}"#,
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
    };
    let de = explain("DE");
    let lines: Vec<&str> = de.lines().filter(|l| l.contains(" replica ")).collect();
    assert_eq!(lines.len(), 3, "{de}");
    assert!(!de.contains("us-1"), "{de}");
    assert!(
        de.contains("replica fr-1 as `meta-llama/Llama-3.1-8B-Instruct` (processes data in FR"),
        "{de}"
    );
    assert!(
        de.contains("pool home: replicas by prefix for this prompt"),
        "{de}"
    );
    // The hosted provider follows the pool's replicas.
    let last_replica = de.find("replica ").unwrap();
    assert!(
        de[last_replica..].contains("openai-eu as `gpt-4o-mini`"),
        "{de}"
    );
    let us = explain("US");
    assert!(us.contains("replica us-1 as"), "{us}");
    let o = meridian(&["test", "policies/examples/self-hosted-pool.toml"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("4 passed, 0 failed"), "{}", stdout(&o));
}
