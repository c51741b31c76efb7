//! Compiled forms that earlier builds wrote are still read as the policy they were made from.

use std::path::Path;

fn fixtures() -> Vec<(String, String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/compiled-v2");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".toml").map(str::to_string))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let toml = std::fs::read_to_string(dir.join(format!("{n}.toml"))).unwrap();
            let v2 = std::fs::read_to_string(dir.join(format!("{n}.v2"))).unwrap();
            (n, toml, v2)
        })
        .collect()
}

/// Every version 2 form (written by the build before version 3, with every part of a rule
/// written out) reads as the policy its TOML gives today; version 3 writes the same policy in
/// fewer characters and reads it back the same.
#[test]
fn a_version_2_compiled_policy_is_still_read() {
    let all = fixtures();
    assert_eq!(all.len(), 7, "the fixtures are all there");
    let mut guards = 0;
    for (name, toml, v2) in all {
        assert!(v2.starts_with("meridian-policy/2 "), "{name}");
        let want = meridian_policy::load(&toml, &format!("{name}.toml")).unwrap();
        // The guards are outside serde's form of the model (the compiled form writes them
        // after it): compared on their own.
        let json = |p: &meridian_policy::Policy| {
            serde_json::json!([
                serde_json::to_value(p).unwrap(),
                serde_json::to_value(&p.guards).unwrap()
            ])
        };
        let want_json = json(&want);
        let old = meridian_policy::compiled::load_any(&v2, "<variable>")
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(json(&old), want_json, "{name}");
        let v3 = meridian_policy::compiled::compile(&want);
        assert!(v3.starts_with("meridian-policy/3 "), "{name}");
        assert!(v3.len() < v2.len(), "{name}: {} >= {}", v3.len(), v2.len());
        let new = meridian_policy::compiled::load_any(&v3, "<variable>").unwrap();
        assert_eq!(json(&new), want_json, "{name}");
        guards += new.guards.catalog.len();
    }
    assert_eq!(
        guards, 2,
        "the built-in detector and an external guard were read"
    );
}

/// Every version 3 form written before the section for later settings (`stream_events`) reads
/// as its TOML with those settings at their defaults, and a policy that sets none of them is
/// still written byte for byte as it was: a deployed form and a newly compiled one are the same.
#[test]
fn a_version_3_form_from_before_the_later_settings_is_read_and_written_the_same() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/compiled-v3");
    let all = fixtures();
    assert_eq!(all.len(), 7);
    for (name, toml, _) in all {
        let v3 = std::fs::read_to_string(dir.join(format!("{name}.v3"))).unwrap();
        let want = meridian_policy::load(&toml, &format!("{name}.toml")).unwrap();
        let old = meridian_policy::compiled::load_any(&v3, "<variable>")
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            format!("{:?}", old.settings),
            format!("{:?}", want.settings),
            "{name}"
        );
        assert_eq!(
            old.settings.stream_events,
            meridian_policy::StreamEvents::Checked
        );
        assert_eq!(
            serde_json::to_value(&old).unwrap(),
            serde_json::to_value(&want).unwrap(),
            "{name}"
        );
        assert_eq!(
            meridian_policy::compiled::compile(&want),
            v3.trim_end(),
            "{name}"
        );
    }
}

/// `stream_events = "framed"` survives the compiled form, alone and after every other section
/// (guards, evidence, pools).
#[test]
fn stream_events_read_back_from_the_compiled_form() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for (name, text) in [
        (
            "minimal",
            "version = 1\n[[providers]]\nid = \"p\"\nbase_url = \"https://p.example/v1\"\nlocation = \"DE\"\nmodels = { m = \"m\" }\n".to_string(),
        ),
        (
            "self-hosted-pool",
            std::fs::read_to_string(root.join("policies/examples/self-hosted-pool.toml")).unwrap(),
        ),
        (
            "every-part",
            std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/fixtures/compiled-v2/every-part.toml"),
            )
            .unwrap(),
        ),
    ] {
        let framed = if text.contains("\n[settings]\n") {
            text.replacen("\n[settings]\n", "\n[settings]\nstream_events = \"framed\"\n", 1)
        } else {
            text.replacen("version = 1\n", "version = 1\n[settings]\nstream_events = \"framed\"\n", 1)
        };
        for (text, want) in [
            (&text, meridian_policy::StreamEvents::Checked),
            (&framed, meridian_policy::StreamEvents::Framed),
        ] {
            let p = meridian_policy::load(text, name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(p.settings.stream_events, want, "{name}");
            let back =
                meridian_policy::compiled::load_any(&meridian_policy::compiled::compile(&p), name)
                    .unwrap();
            assert_eq!(format!("{:?}", back.settings), format!("{:?}", p.settings), "{name}");
            assert_eq!(
                format!("{:?}", back.providers),
                format!("{:?}", p.providers),
                "{name}"
            );
            assert_eq!(
                serde_json::to_value(&back.guards).unwrap(),
                serde_json::to_value(&p.guards).unwrap(),
                "{name}"
            );
        }
    }
}
