//! The signature scheme against RFC 8037's published examples (Ed25519 keys in JOSE), and the
//! key set's choice of key.

use super::*;

// RFC 8037, Appendix A.1: the private key `d` and public key `x`.
const RFC_D: &str = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";
const RFC_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
// A.3: the key's JWK thumbprint (RFC 7638).
const RFC_THUMBPRINT: &str = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k";
// A.4: "Example of Ed25519 signing" signed under the protected header {"alg":"EdDSA"}.
const RFC_JWS: &str = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";

#[test]
fn keys_ids_and_signatures_are_rfc_8037s() {
    let s = Signer::from_secret(RFC_D).unwrap();
    assert_eq!(s.public(), RFC_X);
    assert_eq!(s.kid(), RFC_THUMBPRINT);
    // Ed25519 is deterministic: the same input gives the RFC's signature.
    let signing_input = RFC_JWS.rsplit_once('.').unwrap().0;
    let sig = s.key.sign(signing_input.as_bytes());
    assert_eq!(
        B64.encode(sig.to_bytes()),
        RFC_JWS.rsplit_once('.').unwrap().1
    );
    // The key set verifies the RFC's JWS (it names no key: each is tried).
    let set = KeySet::from_jwks(&jwks(&s, &[])).unwrap();
    let payload = B64.decode(RFC_JWS.split('.').nth(1).unwrap()).unwrap();
    assert_eq!(payload, b"Example of Ed25519 signing");
    assert!(
        matches!(set.verify(RFC_JWS), Err(Invalid::Malformed(_))),
        "its payload is no claims object"
    );
    let mut bad = RFC_JWS.to_string();
    bad.replace_range(bad.len() - 3..bad.len() - 2, "A");
    assert_eq!(set.verify(&bad), Err(Invalid::BadSignature));
}

#[test]
fn a_receipt_names_its_key_and_the_published_set_holds_current_and_retired_keys() {
    let s = Signer::from_secret(RFC_D).unwrap();
    let mut claims = Map::new();
    claims.insert("v".into(), 1.into());
    claims.insert("request_id".into(), "r1".into());
    let jws = s.sign(&claims);
    let header: Value =
        serde_json::from_slice(&B64.decode(jws.split('.').next().unwrap()).unwrap()).unwrap();
    assert_eq!(
        header,
        serde_json::json!({"alg": "EdDSA", "kid": RFC_THUMBPRINT, "typ": TYP})
    );
    let other = Signer::from_secret(&B64.encode([5u8; 32])).unwrap();
    let set = jwks(&s, &[Text::from(other.public())]);
    assert_eq!(set["keys"][0]["x"], RFC_X);
    assert_eq!(set["keys"][0]["kid"], RFC_THUMBPRINT);
    assert_eq!(set["keys"][1]["kid"], other.kid());
    let keys = KeySet::from_jwks(&set).unwrap();
    assert_eq!(keys.verify(&jws).unwrap(), claims);
    assert_eq!(keys.verify(&other.sign(&claims)).unwrap(), claims);
    // Padding and surrounding space in the variable are accepted; other lengths are not.
    assert!(Signer::from_secret(&format!(" {RFC_D}=\n")).is_ok());
    assert!(Signer::from_secret("c2hvcnQ")
        .err()
        .unwrap()
        .contains("not 32"));
    assert!(Signer::from_secret("not base64!").is_err());
    assert!(KeySet::from_jwks(&serde_json::json!({"keys": []})).is_err());
}
