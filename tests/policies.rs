//! Corpus tests: every policy in policies/ validates and passes its own [[test]] cases; every
//! invalid policy under tests/invalid/ fails with exactly the diagnostics in its `.expected`.

use std::path::{Path, PathBuf};

use meridian::{cases, policy};

fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(toml_files(&p));
        } else if p.extension().is_some_and(|x| x == "toml") {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn every_shipped_policy_validates_and_passes_its_cases() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = toml_files(&root.join("policies"));
    assert!(
        files.len() >= 4,
        "the default and at least three examples: {files:?}"
    );
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let name = f.strip_prefix(root).unwrap().display().to_string();
        let p = policy::load(&text, &name).unwrap_or_else(|e| panic!("{e}"));
        assert!(!p.cases.is_empty(), "{name} carries no [[test]] cases");
        for r in cases::run(&p) {
            assert!(
                r.failure.is_none(),
                "{name}:{}: `{}`: {}",
                r.line,
                r.name,
                r.failure.unwrap()
            );
        }
    }
}

#[test]
fn the_embedded_default_is_policies_default_toml() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let on_disk = std::fs::read_to_string(root.join("policies/default.toml")).unwrap();
    assert_eq!(policy::DEFAULT_POLICY, on_disk);
    // What build.rs compiled into this build is that file (unless MERIDIAN_POLICY chose another).
    if std::env::var_os("MERIDIAN_POLICY").is_none() {
        assert_eq!(meridian::embedded::ORIGIN, "policies/default.toml");
        let built_in = meridian::embedded::load();
        let parsed = policy::load(&on_disk, "default").unwrap();
        assert_eq!(built_in.version_label(), parsed.version_label());
        // The static data is the parsed policy, field for field (but its test cases).
        let parsed = policy::Policy {
            cases: Vec::new(),
            warnings: Vec::new(),
            ..parsed
        };
        assert_eq!(format!("{built_in:?}"), format!("{parsed:?}"));
        // Borrowed from the binary, not built at run time.
        assert!(matches!(built_in.providers, std::borrow::Cow::Borrowed(_)));
        assert!(matches!(built_in.name, std::borrow::Cow::Borrowed(_)));
    }
}

#[test]
fn invalid_policies_report_every_error_with_position_and_hint() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = toml_files(&root.join("tests/invalid"));
    assert!(files.len() >= 4);
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let err = policy::load(&text, &name).expect_err(&name);
        let expected_path = f.with_extension("expected");
        let got = format!("{err}\n");
        if std::env::var_os("MERIDIAN_BLESS").is_some() {
            std::fs::write(&expected_path, &got).unwrap();
        }
        let want = std::fs::read_to_string(&expected_path).unwrap_or_else(|_| {
            panic!(
                "missing {}; MERIDIAN_BLESS=1 writes it",
                expected_path.display()
            )
        });
        assert_eq!(got, want, "diagnostics of {name} changed");
    }
}

/// A failing case is reported, not hidden: the runner must be able to fail.
#[test]
fn a_wrong_expectation_fails() {
    let text = policy::DEFAULT_POLICY.to_string()
        + "\n[[test]]\nname = \"wrong on purpose\"\nmodel = \"llama-3.1-8b\"\ncountry = \"US\"\nexpect_first = \"groq\"\n";
    let p = policy::load(&text, "x").unwrap();
    let results = cases::run(&p);
    let wrong = results
        .iter()
        .find(|r| r.name == "wrong on purpose")
        .unwrap();
    assert_eq!(
        wrong.failure.as_deref(),
        Some("expected `groq` first, got [\"local\"]")
    );
}

#[test]
fn a_single_legacy_country_header_keeps_working_with_a_warning() {
    let text = "version = 1\n[settings]\ntrusted_country_headers = [\"CF-IPCountry\"]\nallow_anonymous = true\n[[providers]]\nid = \"a\"\nbase_url = \"https://a.example/v1\"\nlocation = \"DE\"\ntrains_on_inputs = false\nretention_days = 0\nmodels = { \"m\" = \"m\" }\n";
    let p = policy::load(text, "legacy.toml").unwrap();
    let warnings: Vec<String> = p.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(
        warnings,
        ["3:1: warning: `trusted_country_headers` is deprecated\n  help: write `[settings.client]` with `platform = \"custom\"` and `country_header = \"CF-IPCountry\"`, or the platform's own profile"]
    );
    let headers = vec![("cf-ipcountry".to_string(), "FR".to_string())];
    let l = meridian::location::locate(&p.settings.client, &headers, None, None);
    assert_eq!(l.country.as_str(), "FR");
}
