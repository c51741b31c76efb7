//! Signed receipts (`[settings.receipts]`, docs/evidence.md): what Meridian attests about a
//! request, as a JWS (RFC 7515, compact form) signed with Ed25519 (RFC 8037 `EdDSA`), checkable
//! offline against the public keys at `/.well-known/jwks.json` (`meridian verify`).
//!
//! A receipt's claims are fields of the request's log line, with the same names and values
//! (`RECEIPT_FIELDS`), so a verifier checks the line against its receipt field by field; a few
//! belong to the receipt alone (`RECEIPT_ONLY`): its version, whether it is a stream's opening
//! receipt, its number in the store's sequence, and its place in its instance's chain. Never
//! prompt text or keys: the log line holds none.

use std::cell::RefCell;

use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::policy::Text;

/// The log line's fields a receipt attests, by the log line's own names. `attempts` and
/// `guards` are attested in part: each attempt's provider and outcome, each verdict but its
/// timing and `detail`.
pub const RECEIPT_FIELDS: &[&str] = &[
    "request_id",
    "ts_ms",
    "method",
    "path",
    "status",
    "policy",
    "tenant",
    "model",
    "country",
    "country_source",
    "provider",
    "served_model",
    "upstream_model",
    "jurisdiction",
    "storage",
    "replica",
    "retention_days",
    "zdr",
    "rules",
    "attempts",
    "error_code",
    "stream_outcome",
    "pii",
    "capabilities",
    "usage",
    "cost_usd",
    "refused_by",
    "guards",
];

/// What only the receipt holds: the format's version, `final: false` on a stream's opening
/// receipt (its answer, usage and cost are not known yet), the store's sequence number and the
/// instance chain's link.
pub const RECEIPT_ONLY: &[&str] = &["v", "final", "seq", "chain"];

/// The fields of an attempt and of a guard's verdict that a receipt attests.
const ATTEMPT_FIELDS: &[&str] = &["provider", "replica", "outcome", "hedge"];
const VERDICT_FIELDS: &[&str] = &["guard", "rule", "on", "label", "score", "outcome", "beside"];

/// The JWS header's `typ`.
pub const TYP: &str = "meridian-receipt+jws";

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The key receipts are signed with, read from its Spin variable.
pub struct Signer {
    key: SigningKey,
    kid: String,
    /// The JWS protected header, encoded once.
    header: String,
}

impl Signer {
    /// From the variable's text: 32 bytes in base64url (padding and surrounding space allowed).
    pub fn from_secret(text: &str) -> Result<Signer, String> {
        let raw = B64
            .decode(text.trim().trim_end_matches('='))
            .map_err(|_| "is not base64url".to_string())?;
        let seed: [u8; 32] = raw
            .try_into()
            .map_err(|v: Vec<u8>| format!("holds {} bytes, not 32", v.len()))?;
        let key = SigningKey::from_bytes(&seed);
        let kid = kid_of(key.verifying_key().as_bytes());
        let header = B64.encode(format!(
            "{{\"alg\":\"EdDSA\",\"kid\":\"{kid}\",\"typ\":\"{TYP}\"}}"
        ));
        Ok(Signer { key, kid, header })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key, base64url (a JWK's `x`).
    pub fn public(&self) -> String {
        B64.encode(self.key.verifying_key().as_bytes())
    }

    /// The claims as a JWS in compact form.
    pub fn sign(&self, claims: &Map<String, Value>) -> String {
        let payload = crate::json::to_vec(claims).unwrap_or_default();
        let mut jws = String::with_capacity(self.header.len() + payload.len() * 4 / 3 + 100);
        jws.push_str(&self.header);
        jws.push('.');
        B64.encode_string(&payload, &mut jws);
        let sig = self.key.sign(jws.as_bytes());
        jws.push('.');
        B64.encode_string(sig.to_bytes(), &mut jws);
        jws
    }
}

/// What a request needs to seal its receipts: the signer, whether its log receipt takes a
/// sequence number, whether its response carries a receipt, and a random id for the instance's
/// chain should this request start it.
#[derive(Clone)]
pub struct Sealing {
    pub signer: std::rc::Rc<Signer>,
    pub sequence: bool,
    pub header: bool,
    pub seed: String,
}

impl std::fmt::Debug for Sealing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealing({})", self.signer.kid)
    }
}

/// The store key of the receipts' sequence.
pub fn sequence_key() -> String {
    format!("{}:receipts:seq", crate::limits::PREFIX)
}

/// A key's id: its RFC 7638 JWK thumbprint (SHA-256 of the canonical JWK), base64url.
pub fn kid_of(public: &[u8; 32]) -> String {
    let canonical = format!(
        "{{\"crv\":\"Ed25519\",\"kty\":\"OKP\",\"x\":\"{}\"}}",
        B64.encode(public)
    );
    B64.encode(Sha256::digest(canonical.as_bytes()))
}

/// A public key as a JWK.
pub fn jwk(x: &str) -> Option<Value> {
    let raw: [u8; 32] = B64.decode(x).ok()?.try_into().ok()?;
    Some(serde_json::json!({
        "kty": "OKP",
        "crv": "Ed25519",
        "x": x,
        "kid": kid_of(&raw),
        "alg": "EdDSA",
        "use": "sig",
    }))
}

/// The JWK Set served at `/.well-known/jwks.json`: the current key, then the retired ones.
pub fn jwks(current: &Signer, retired: &[Text]) -> Value {
    let keys: Vec<Value> = std::iter::once(current.public())
        .chain(retired.iter().map(|k| k.to_string()))
        .filter_map(|x| jwk(&x))
        .collect();
    serde_json::json!({ "keys": keys })
}

/// The signer for a policy's `[settings.receipts]`, from its variable; kept for the instance
/// (a WASI 0.3 instance serves many requests) while the variable's text stays the same.
pub fn signer(
    secret: &dyn Fn(&str) -> Option<String>,
    receipts: &crate::policy::Receipts,
) -> Result<std::rc::Rc<Signer>, String> {
    thread_local! {
        static CACHE: RefCell<Option<(String, std::rc::Rc<Signer>)>> = const { RefCell::new(None) };
    }
    let name = receipts.key_secret.as_ref();
    let text = secret(name)
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| format!("the receipt signing key (variable `{name}`) is not set"))?;
    CACHE.with(|c| {
        if let Some((t, s)) = c.borrow().as_ref() {
            if *t == text {
                return Ok(s.clone());
            }
        }
        let s = std::rc::Rc::new(
            Signer::from_secret(&text)
                .map_err(|e| format!("the receipt signing key (variable `{name}`) {e}"))?,
        );
        *c.borrow_mut() = Some((text, s.clone()));
        Ok(s)
    })
}

/// The claims of a receipt: the attested fields of a log line (rendered as a JSON object).
pub fn claims(line: &Map<String, Value>, final_: bool) -> Map<String, Value> {
    let mut c = Map::new();
    c.insert("v".into(), Value::from(1));
    if !final_ {
        c.insert("final".into(), Value::Bool(false));
    }
    for &k in RECEIPT_FIELDS {
        if let Some(v) = line.get(k) {
            c.insert(k.into(), attested(k, v));
        }
    }
    c
}

/// What a receipt attests of a log line's field: the whole value, or (`attempts`, `guards`)
/// each item's attested fields.
fn attested(field: &str, v: &Value) -> Value {
    match field {
        "attempts" => project(v, ATTEMPT_FIELDS),
        "guards" => project(v, VERDICT_FIELDS),
        _ => v.clone(),
    }
}

/// Each object of a list, cut to `keep`.
fn project(list: &Value, keep: &[&str]) -> Value {
    match list {
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|i| match i {
                    Value::Object(o) => Value::Object(
                        o.iter()
                            .filter(|(k, _)| keep.contains(&k.as_str()))
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect(),
                    ),
                    other => other.clone(),
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// An instance's chain of log receipts: each names the instance, its place in it and the
/// digest of the receipt before it, so a verifier finds lines removed or moved between two
/// lines of the same instance. A WASI 0.2 instance serves one request: its chain is one long.
struct Chain {
    instance: String,
    n: u64,
    prev: Option<String>,
}

thread_local! {
    static CHAIN: RefCell<Option<Chain>> = const { RefCell::new(None) };
}

/// Signs a log receipt as the next link of this instance's chain (`fresh`: a random id, for a
/// new chain's name). Taking the link and signing are one step, so the chain's order is the
/// order the lines are written in.
pub fn sign_chained(
    signer: &Signer,
    mut claims: Map<String, Value>,
    fresh: &dyn Fn() -> String,
) -> String {
    CHAIN.with(|c| {
        let mut c = c.borrow_mut();
        let chain = c.get_or_insert_with(|| Chain {
            instance: fresh(),
            n: 0,
            prev: None,
        });
        claims.insert(
            "chain".into(),
            serde_json::json!({
                "instance": chain.instance,
                "n": chain.n,
                "prev": chain.prev,
            }),
        );
        let jws = signer.sign(&claims);
        chain.n += 1;
        chain.prev = Some(digest(&jws));
        jws
    })
}

/// A receipt's digest, as the next link's `prev` names it: SHA-256 of its text, base64url.
pub fn digest(jws: &str) -> String {
    B64.encode(Sha256::digest(jws.as_bytes()))
}

/// Why a receipt does not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    /// Not three base64url parts with a JSON header and payload.
    Malformed(String),
    /// Signed by a key the key set does not hold (`kid`).
    UnknownKey(String),
    /// The signature does not match the header and claims under the named key.
    BadSignature,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Invalid::Malformed(m) => write!(f, "the receipt is malformed: {m}"),
            Invalid::UnknownKey(k) => {
                write!(f, "the receipt names a key not in the key set (`{k}`)")
            }
            Invalid::BadSignature => f.write_str(
                "the receipt's signature does not verify: it was altered, or signed by another key",
            ),
        }
    }
}

/// Public keys by id, from a JWK Set.
pub struct KeySet(Vec<(String, VerifyingKey)>);

impl KeySet {
    pub fn from_jwks(jwks: &Value) -> Result<KeySet, String> {
        let keys = jwks
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("a JWK Set is an object with a `keys` list")?;
        let mut out = Vec::new();
        for k in keys {
            if k.get("kty").and_then(Value::as_str) != Some("OKP")
                || k.get("crv").and_then(Value::as_str) != Some("Ed25519")
            {
                continue;
            }
            let x = k.get("x").and_then(Value::as_str).unwrap_or_default();
            let raw: [u8; 32] = B64
                .decode(x)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| format!("key `{x}` is not 32 bytes of base64url"))?;
            let vk = VerifyingKey::from_bytes(&raw)
                .map_err(|_| format!("key `{x}` is not an Ed25519 public key"))?;
            // The id is the key's thumbprint, whatever the set says.
            out.push((kid_of(&raw), vk));
        }
        if out.is_empty() {
            return Err("the key set holds no Ed25519 key".into());
        }
        Ok(KeySet(out))
    }

    /// Verifies a receipt; its claims when it holds.
    pub fn verify(&self, jws: &str) -> Result<Map<String, Value>, Invalid> {
        let mut parts = jws.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Invalid::Malformed("not three dot-separated parts".into()));
        };
        let json = |part: &str, what: &str| -> Result<Value, Invalid> {
            let bytes = B64
                .decode(part)
                .map_err(|_| Invalid::Malformed(format!("its {what} is not base64url")))?;
            serde_json::from_slice(&bytes)
                .map_err(|_| Invalid::Malformed(format!("its {what} is not JSON")))
        };
        let header = json(h, "header")?;
        if header.get("alg").and_then(Value::as_str) != Some("EdDSA") {
            return Err(Invalid::Malformed("its `alg` is not `EdDSA`".into()));
        }
        let sig: [u8; 64] = B64
            .decode(s)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| Invalid::Malformed("its signature is not 64 bytes".into()))?;
        let sig = ed25519_dalek::Signature::from_bytes(&sig);
        let signed = &jws.as_bytes()[..h.len() + 1 + p.len()];
        // Meridian's receipts name their key; a JWS without `kid` is tried with every key.
        match header.get("kid").and_then(Value::as_str) {
            Some(kid) => {
                let key = self
                    .0
                    .iter()
                    .find(|(k, _)| k == kid)
                    .map(|(_, v)| v)
                    .ok_or_else(|| Invalid::UnknownKey(kid.to_string()))?;
                key.verify(signed, &sig)
                    .map_err(|_| Invalid::BadSignature)?;
            }
            None => {
                if !self.0.iter().any(|(_, k)| k.verify(signed, &sig).is_ok()) {
                    return Err(Invalid::BadSignature);
                }
            }
        }
        match json(p, "payload")? {
            Value::Object(m) => Ok(m),
            _ => Err(Invalid::Malformed("its payload is not an object".into())),
        }
    }
}

/// The fields of a log line that differ from what its receipt attests (by name).
pub fn differences(line: &Map<String, Value>, claims: &Map<String, Value>) -> Vec<String> {
    let mut out = Vec::new();
    for &k in RECEIPT_FIELDS {
        let signed = claims.get(k);
        let said = line.get(k).map(|v| attested(k, v));
        // A stream's opening receipt does not attest the answer's outcome yet.
        if signed.is_none() && claims.get("final") == Some(&Value::Bool(false)) {
            continue;
        }
        if signed != said.as_ref() {
            out.push(k.to_string());
        }
    }
    out
}

mod verify;
pub use verify::{verify_log, Finding, Kind, LogReport};

#[cfg(test)]
mod tests;
