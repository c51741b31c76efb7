//! Compiles the routing policy into the component: validates it (the build fails with every
//! diagnostic if it is invalid) and writes it out as Rust static data (`policy.rs`, one constant
//! expression), so no request parses, decodes or allocates the built-in policy.
//! `MERIDIAN_POLICY=path/to/policy.toml` selects a deployment's own policy (default:
//! policies/default.toml).
//!
//! `MERIDIAN_GEOIP=dir` also compiles in an IP-to-country table from the `ip-location-db` package
//! unpacked in `dir` (`scripts/geoip` fetches it): the country of a client whose platform gives
//! only its address. Without it the component has no table (such addresses stay unknown).

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=MERIDIAN_POLICY");
    println!("cargo:rerun-if-env-changed=MERIDIAN_GEOIP");
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let chosen = std::env::var("MERIDIAN_POLICY")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "policies/default.toml".to_string());
    let path = root.join(&chosen);
    println!("cargo:rerun-if-changed={}", path.display());
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("MERIDIAN_POLICY: cannot read {}: {e}", path.display());
            std::process::exit(1);
        }
    };
    let policy = match meridian_policy::load(&text, &chosen) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("the policy to embed is invalid:\n{e}");
            std::process::exit(1);
        }
    };
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    let write = std::fs::write(out.join("policy.rs"), meridian_policy::emit_policy(&policy))
        .and_then(|()| std::fs::write(out.join("policy.origin"), &chosen));
    if let Err(e) = write {
        eprintln!("cannot write the compiled policy: {e}");
        std::process::exit(1);
    }
    // Every example policy written the same way, for the crate's own tests (`emitted`), which
    // compare each with the policy parsed at run time.
    println!("cargo:rerun-if-changed=policies/examples");
    let mut examples = String::from("&[");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(root.join("policies/examples"))
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    paths.sort();
    for path in paths
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
    {
        let name = path
            .strip_prefix(&root)
            .unwrap_or(path)
            .display()
            .to_string();
        println!("cargo:rerun-if-changed={}", path.display());
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        if let Ok(p) = meridian_policy::load(&text, &name) {
            examples.push_str(&format!(
                "({name:?}, {}), ",
                meridian_policy::emit_policy(&p)
            ));
        }
    }
    examples.push(']');
    if let Err(e) = std::fs::write(out.join("examples.rs"), examples) {
        eprintln!("cannot write the example policies: {e}");
        std::process::exit(1);
    }
    let table = match std::env::var("MERIDIAN_GEOIP")
        .ok()
        .filter(|d| !d.is_empty())
    {
        Some(dir) => match geoip_table(&PathBuf::from(dir)) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("MERIDIAN_GEOIP: {e}");
                std::process::exit(1);
            }
        },
        None => Vec::new(),
    };
    if let Err(e) = std::fs::write(out.join("geoip.bin"), table) {
        eprintln!("cannot write the IP table: {e}");
        std::process::exit(1);
    }
}

/// The table from an unpacked `@ip-location-db/geo-whois-asn-country` package.
fn geoip_table(dir: &std::path::Path) -> Result<Vec<u8>, String> {
    println!("cargo:rerun-if-env-changed=MERIDIAN_GEOIP");
    let read = |name: &str| {
        let p = dir.join(name);
        println!("cargo:rerun-if-changed={}", p.display());
        std::fs::read_to_string(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))
    };
    let package = read("package.json")?;
    // The package's version is `2.3.YYYYMMDDHH`: the data's date.
    let version = package
        .split("\"version\"")
        .nth(1)
        .and_then(|rest| rest.split('"').nth(1))
        .ok_or("package.json has no version")?;
    let stamp = version.rsplit('.').next().unwrap_or_default();
    if stamp.len() < 8 || !stamp.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("unexpected package version `{version}`"));
    }
    let date = format!("{}-{}-{}", &stamp[..4], &stamp[4..6], &stamp[6..8]);
    let source = format!("geo-whois-asn-country {version}");
    let v4 = meridian_policy::geoip::read_num_csv(&read("geo-whois-asn-country-ipv4-num.csv")?)?;
    let v6 = meridian_policy::geoip::read_num_csv(&read("geo-whois-asn-country-ipv6-num.csv")?)?;
    meridian_policy::geoip::build(&date, &source, &v4, &v6)
}
