//! spin.toml must stay deployable and match the embedded policy's catalog exactly.

use std::collections::BTreeSet;

fn manifest() -> toml::Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/spin.toml")).unwrap();
    toml::from_str(&text).unwrap()
}

fn origin(u: &url::Url) -> String {
    match u.port() {
        Some(p) => format!("{}://{}:{p}", u.scheme(), u.host_str().unwrap()),
        None => format!("{}://{}", u.scheme(), u.host_str().unwrap()),
    }
}

#[test]
fn allowed_outbound_hosts_are_exactly_the_built_in_catalog_hosts() {
    let m = manifest();
    let allowed: BTreeSet<String> = m["component"]["meridian"]["allowed_outbound_hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let p = meridian::embedded::load();
    let catalog: BTreeSet<String> = p
        .providers
        .iter()
        .map(|p| origin(&p.base_url.url().unwrap()))
        .collect();
    let missing: Vec<_> = catalog.difference(&allowed).collect();
    assert!(
        missing.is_empty(),
        "the catalog names hosts spin.toml does not allow: {missing:?}"
    );
    let extra: Vec<_> = allowed.difference(&catalog).collect();
    assert!(
        extra.is_empty(),
        "spin.toml allows hosts no provider uses: {extra:?}"
    );
}

#[test]
fn every_provider_key_is_a_secret_variable_wired_to_the_component() {
    let m = manifest();
    let p = meridian::embedded::load();
    for name in p
        .providers
        .iter()
        .filter_map(|p| p.key_secret.as_deref())
        .chain(["admin_key"])
    {
        let var = &m["variables"][name];
        assert_eq!(
            var["secret"].as_bool(),
            Some(true),
            "`{name}` must be a secret variable"
        );
        assert_eq!(
            m["component"]["meridian"]["variables"][name].as_str(),
            Some(format!("{{{{ {name} }}}}").as_str()),
            "`{name}` must be passed to the component"
        );
    }
    for name in ["policy", "edge_region"] {
        assert!(
            m["variables"].get(name).is_some(),
            "`{name}` must be declared"
        );
    }
}

#[test]
fn the_build_command_produces_the_deployed_source() {
    let m = manifest();
    let c = &m["component"]["meridian"];
    assert_eq!(
        c["source"].as_str(),
        Some("target/wasm32-wasip2/release/meridian.wasm")
    );
    assert_eq!(
        c["build"]["command"].as_str(),
        Some("cargo build --target wasm32-wasip2 --release")
    );
    assert_eq!(m["trigger"]["http"][0]["route"].as_str(), Some("/..."));
}

/// spin-p3.toml deploys the WASI 0.3 build with everything else exactly as spin.toml.
#[test]
fn the_wasi_0_3_manifest_differs_only_in_its_build() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/spin-p3.toml"))
        .expect("spin-p3.toml");
    let mut p3: toml::Value = toml::from_str(&text).expect("spin-p3.toml parses");
    let c = &p3["component"]["meridian"];
    assert_eq!(
        c["source"].as_str(),
        Some("target/p3/wasm32-wasip2/release/meridian_p3.wasm")
    );
    assert_eq!(
        c["build"]["command"].as_str(),
        Some("cargo build --manifest-path adapters/spin-p3/Cargo.toml --target wasm32-wasip2 --release --target-dir target/p3")
    );
    let mut p2 = manifest();
    for m in [&mut p2, &mut p3] {
        let c = m["component"]["meridian"].as_table_mut().unwrap();
        c.remove("source");
        c.remove("build");
    }
    assert_eq!(
        p2, p3,
        "spin-p3.toml and spin.toml differ beyond the component's build"
    );
}

/// spin-otel.toml deploys the `wasi:otel` build with everything else exactly as spin.toml.
#[test]
fn the_otel_manifest_differs_only_in_its_build() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/spin-otel.toml"))
        .expect("spin-otel.toml");
    let mut otel: toml::Value = toml::from_str(&text).expect("spin-otel.toml parses");
    let c = &otel["component"]["meridian"];
    assert_eq!(
        c["source"].as_str(),
        Some("target/otel/wasm32-wasip2/release/meridian.wasm")
    );
    assert_eq!(
        c["build"]["command"].as_str(),
        Some(
            "cargo build --target wasm32-wasip2 --release --features otel --target-dir target/otel"
        )
    );
    let mut p2 = manifest();
    for m in [&mut p2, &mut otel] {
        let c = m["component"]["meridian"].as_table_mut().unwrap();
        c.remove("source");
        c.remove("build");
    }
    assert_eq!(
        p2, otel,
        "spin-otel.toml and spin.toml differ beyond the component's build"
    );
}
