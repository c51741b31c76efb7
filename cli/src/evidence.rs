//! `meridian keygen` and `meridian verify`: the keys receipts are signed with, and checking
//! receipts and logs against them offline (docs/evidence.md).

use std::path::{Path, PathBuf};

use meridian::receipt::{self, KeySet};

#[derive(clap::Args)]
pub struct VerifyArgs {
    /// The public keys: a JWK Set file, as Meridian serves it at /.well-known/jwks.json.
    #[arg(long)]
    pub keys: PathBuf,
    /// Check this one receipt (an `x-meridian-receipt` header's value) and print its claims.
    #[arg(long, conflicts_with = "logs")]
    pub receipt: Option<String>,
    /// Log files (one JSON line per request, as the component writes them); none or `-`: stdin.
    pub logs: Vec<PathBuf>,
    /// Print the findings as JSON.
    #[arg(long)]
    pub json: bool,
}

fn key_set(path: &Path) -> Result<KeySet, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
    KeySet::from_jwks(&v).map_err(|e| format!("{}: {e}", path.display()))
}

/// Ok(true) when everything verified.
pub fn verify(a: &VerifyArgs) -> Result<bool, String> {
    let keys = key_set(&a.keys)?;
    if let Some(jws) = &a.receipt {
        return match keys.verify(jws.trim()) {
            Ok(claims) => {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&claims).unwrap_or_default()
                );
                eprintln!("the receipt verifies");
                Ok(true)
            }
            Err(e) => {
                println!("{e}");
                Ok(false)
            }
        };
    }
    let mut text = String::new();
    super::each_line(&a.logs, |l| {
        text.push_str(l.trim_end_matches(['\n', '\r']));
        text.push('\n');
    })?;
    let r = receipt::verify_log(&text, &keys);
    if a.json {
        let findings: Vec<serde_json::Value> = r
            .findings
            .iter()
            .map(|f| serde_json::json!({"line": f.line, "finding": f.to_string().split_once(": ").map_or(String::new(), |(_, w)| w.to_string())}))
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "lines": r.lines,
                "verified": r.verified,
                "sequenced": r.sequenced,
                "chained": r.chained,
                "findings": findings,
            })
        );
    } else {
        for f in &r.findings {
            println!("{f}");
        }
        println!(
            "{} of {} lines verified; {} numbered by the store's sequence, {} chained within an instance; {} finding(s)",
            r.verified,
            r.lines,
            r.sequenced,
            r.chained,
            r.findings.len()
        );
    }
    Ok(r.findings.is_empty())
}

/// A fresh signing key: its secret for the Spin variable, and the public JWK Set.
pub fn keygen() -> Result<(), String> {
    use base64::Engine as _;
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| format!("no randomness: {e}"))?;
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(seed);
    let signer = receipt::Signer::from_secret(&secret)?;
    println!(
        "# The signing key: put it in the Spin variable `[settings.receipts] key_secret` names"
    );
    println!(
        "# (a secret; never in the policy). Its key id is {}.",
        signer.kid()
    );
    println!("secret: {secret}");
    println!(
        "# The public key, for `retired_keys` once you rotate to a new one: {}",
        signer.public()
    );
    println!("# Its JWK Set, as /.well-known/jwks.json serves it, for `meridian verify --keys`:");
    println!("{}", receipt::jwks(&signer, &[]));
    Ok(())
}
