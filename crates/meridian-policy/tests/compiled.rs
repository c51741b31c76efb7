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
