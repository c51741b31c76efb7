//! The compiled form of a policy: validated once (at build time), serialized with postcard, and
//! loaded by the component on every request without parsing or validating TOML again.
//!
//! The bytes start with a header naming this crate's version: a blob from another build is
//! refused rather than misread.

use crate::model::Policy;

const MAGIC: &[u8] = b"meridian-policy/";

fn header() -> Vec<u8> {
    let mut h = MAGIC.to_vec();
    h.extend_from_slice(env!("CARGO_PKG_VERSION").as_bytes());
    h.push(0);
    h
}

/// Serializes a validated policy (its `[[test]]` cases are left out: the component never runs them).
pub fn compile(policy: &Policy) -> Result<Vec<u8>, String> {
    let mut out = header();
    out.extend(
        postcard::to_allocvec(policy).map_err(|e| format!("cannot compile the policy: {e}"))?,
    );
    Ok(out)
}

/// Loads a compiled policy. Errors say why the bytes are not one this build can read.
pub fn load_compiled(bytes: &[u8]) -> Result<Policy, String> {
    let h = header();
    let body = bytes.strip_prefix(h.as_slice()).ok_or_else(|| {
        "the compiled policy was made by another version of Meridian; rebuild the component"
            .to_string()
    })?;
    postcard::from_bytes(body).map_err(|e| format!("the compiled policy is corrupt: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_everything_but_test_cases() {
        let p = crate::load(crate::DEFAULT_POLICY, "default.toml").expect("default policy");
        let bytes = compile(&p).expect("compiles");
        let q = load_compiled(&bytes).expect("loads");
        assert_eq!(
            format!(
                "{:?}",
                Policy {
                    tests: vec![],
                    ..p.clone()
                }
            ),
            format!("{q:?}")
        );
        assert!(!p.tests.is_empty() && q.tests.is_empty());
        // Globs are rebuilt: they still match after the round trip.
        let glob = q
            .rules
            .iter()
            .flat_map(|r| r.when.models.iter().flat_map(|m| m.iter()))
            .next();
        if let Some(g) = glob {
            assert!(g.matches(&g.text.replace('*', "x")));
        }
    }

    #[test]
    fn refuses_foreign_or_corrupt_bytes() {
        let p = crate::load(crate::DEFAULT_POLICY, "default.toml").expect("default policy");
        let mut bytes = compile(&p).expect("compiles");
        let err = load_compiled(b"meridian-policy/0.0.0\0xyz").unwrap_err();
        assert!(err.contains("another version"), "{err}");
        bytes.truncate(bytes.len() / 2);
        let err = load_compiled(&bytes).unwrap_err();
        assert!(err.contains("corrupt"), "{err}");
    }
}
