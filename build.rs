//! Compiles the routing policy into the component: validates it (the build fails with every
//! diagnostic if it is invalid) and embeds its compiled form, so no request parses TOML.
//! `MERIDIAN_POLICY=path/to/policy.toml` selects a deployment's own policy (default:
//! policies/default.toml).

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=MERIDIAN_POLICY");
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
    let compiled = match meridian_policy::compile(&policy) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    let write = std::fs::write(out.join("policy.bin"), compiled)
        .and_then(|()| std::fs::write(out.join("policy.origin"), &chosen));
    if let Err(e) = write {
        eprintln!("cannot write the compiled policy: {e}");
        std::process::exit(1);
    }
}
