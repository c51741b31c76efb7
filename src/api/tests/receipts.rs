//! Signed receipts: what a response's and a log line's receipt attest, that they verify against
//! the published keys, that a change to a line, a wrong key, a rotated key, a removed or moved
//! line is found, and that a receipt never holds prompt text or keys.

use base64::Engine as _;

use super::*;
use crate::receipt::{self, Invalid, KeySet, Kind};
use crate::testing::MemStore;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Signing keys for the tests (seeds: 32 bytes of 7s, of 9s).
fn key(byte: u8) -> String {
    B64.encode([byte; 32])
}

fn public(byte: u8) -> String {
    receipt::Signer::from_secret(&key(byte)).unwrap().public()
}

fn signed(extra: &str) -> Policy {
    load(&format!(
        "[settings.receipts]\nkey_secret = \"receipt_key\"\n{extra}"
    ))
}

/// Secrets with the receipt key `byte`.
fn secrets(byte: u8) -> impl Fn(&str) -> Option<String> {
    move |name: &str| match name {
        "receipt_key" => Some(key(byte)),
        "beta_key" => Some("sk-beta-provider".to_string()),
        _ => None,
    }
}

/// A chat request with these secrets, store and headers.
async fn chat_with(
    p: &Policy,
    secret: &dyn Fn(&str) -> Option<String>,
    store: Option<&dyn crate::limits::Store>,
    t: &Fake,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    call_store(
        Ok(p),
        secret,
        store,
        t,
        "POST",
        "/v1/chat/completions",
        headers,
        body,
    )
    .await
}

/// A chat request from acme's client in Germany, signed with key `byte`.
async fn ask(p: &Policy, byte: u8, t: &Fake, body: &str) -> Answer {
    chat_with(p, &secrets(byte), None, t, &ACME_DE, body).await
}

async fn jwks(p: &Policy, byte: u8) -> KeySet {
    let a = call_store(
        Ok(p),
        &secrets(byte),
        None,
        &no_script(),
        "GET",
        "/.well-known/jwks.json",
        &[],
        "",
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.header("content-type"), Some("application/jwk-set+json"));
    assert_eq!(a.header("cache-control"), Some("public, max-age=300"));
    KeySet::from_jwks(&a.json()).unwrap()
}

fn object(line: &str) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::from_str(line).unwrap() {
        serde_json::Value::Object(m) => m,
        _ => panic!("{line}"),
    }
}

#[tokio::test]
async fn a_response_and_its_log_line_carry_receipts_that_verify_against_the_published_keys() {
    let p = signed("");
    let t = Fake::new(vec![("alpha", vec![ok_json(0)])]);
    let a = ask(&p, 7, &t, CHAT).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let keys = jwks(&p, 7).await;
    let claims = keys
        .verify(a.header("x-meridian-receipt").unwrap())
        .unwrap();
    // What the response's receipt attests, read from the test's own request.
    assert_eq!(claims["request_id"], a.record.request_id.as_str());
    assert_eq!(claims["tenant"], "acme");
    assert_eq!(claims["country"], "DE");
    assert_eq!(
        claims["country_source"],
        a.record.country_source.as_deref().unwrap()
    );
    assert_eq!(claims["provider"], "alpha");
    assert_eq!(claims["served_model"], "chat-model");
    assert_eq!(claims["upstream_model"], "a-m");
    assert_eq!(claims["jurisdiction"], "DE");
    assert_eq!(claims["storage"], "DE");
    assert_eq!(claims["status"], 200);
    assert_eq!(claims["usage"]["prompt_tokens"], 1);
    assert_eq!(claims["usage"]["completion_tokens"], 2);
    // 1 input token at $1/M and 2 output tokens at $2/M.
    assert_eq!(claims["cost_usd"].as_f64().unwrap(), 5e-6);
    assert!(claims["policy"].as_str().unwrap().starts_with("api@1+"));
    assert!(
        claims.get("final").is_none(),
        "a whole answer's receipt is final"
    );
    // The log line's receipt attests the line, field by field.
    let line = object(&a.log);
    let log_claims = keys.verify(line["receipt"].as_str().unwrap()).unwrap();
    assert_eq!(
        receipt::differences(&line, &log_claims),
        Vec::<String>::new()
    );
    assert_eq!(log_claims["chain"]["n"], 0);
    assert_eq!(log_claims["chain"]["prev"], serde_json::Value::Null);
}

#[tokio::test]
async fn every_attested_field_of_a_line_changed_is_named_and_an_edited_receipt_fails() {
    // alpha fails first, beta serves: the line has an attempt that failed.
    let p = signed("[[rules]]\nid = \"a-first\"\nprefer = { order = [\"alpha\", \"beta\"] }\n");
    let t = Fake::new(vec![
        ("alpha", vec![status(503, None)]),
        ("beta", vec![ok_json(0)]),
    ]);
    let a = ask(&p, 7, &t, CHAT).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let keys = jwks(&p, 7).await;
    let line = object(&a.log);
    let claims = keys.verify(line["receipt"].as_str().unwrap()).unwrap();
    let mut checked = 0;
    for (field, value) in &line {
        if field == "receipt" {
            continue;
        }
        let mut edited = line.clone();
        edited[field] = match value {
            serde_json::Value::String(s) => format!("{s}x").into(),
            serde_json::Value::Number(n) => (n.as_f64().unwrap() + 1.0).into(),
            serde_json::Value::Bool(b) => (!b).into(),
            serde_json::Value::Array(v) if v.is_empty() => serde_json::json!(["x"]),
            serde_json::Value::Array(v) => {
                let mut v = v.clone();
                v.pop();
                v.into()
            }
            serde_json::Value::Object(o) => {
                let mut o = o.clone();
                o.insert("prompt_tokens".into(), 99.into());
                o.insert("action".into(), "none".into());
                o.into()
            }
            serde_json::Value::Null => "x".into(),
        };
        let found = receipt::differences(&edited, &claims);
        if receipt::RECEIPT_FIELDS.contains(&field.as_str()) {
            assert_eq!(found, std::slice::from_ref(field), "{field}");
            checked += 1;
        } else {
            assert!(found.is_empty(), "{field} is not attested: {found:?}");
        }
    }
    assert!(checked >= 15, "{checked} attested fields checked");
    // A field removed from the line, or added, is a change too.
    let mut cut = line.clone();
    cut.remove("provider");
    assert_eq!(receipt::differences(&cut, &claims), ["provider"]);
    // The receipt edited: one claim changed and the payload encoded again.
    let jws = line["receipt"].as_str().unwrap();
    let mut parts: Vec<String> = jws.split('.').map(str::to_string).collect();
    let mut payload: serde_json::Value =
        serde_json::from_slice(&B64.decode(&parts[1]).unwrap()).unwrap();
    payload["provider"] = "gamma".into();
    parts[1] = B64.encode(payload.to_string());
    assert_eq!(keys.verify(&parts.join(".")), Err(Invalid::BadSignature));
}

#[tokio::test]
async fn a_receipt_signed_by_another_key_is_refused_and_a_rotated_key_stays_verifiable() {
    let t = Fake::new(vec![("alpha", vec![ok_json(0), ok_json(0)])]);
    // Signed with key 7 while it was current.
    let old = ask(&signed(""), 7, &t, CHAT).await;
    let old_receipt = old.header("x-meridian-receipt").unwrap().to_string();
    // Rotated: key 9 signs, key 7 is retired and still published.
    let rotated = signed(&format!("retired_keys = [\"{}\"]", public(7)));
    let keys = jwks(&rotated, 9).await;
    keys.verify(&old_receipt)
        .expect("a retired key's receipt verifies");
    let new = ask(&rotated, 9, &t, CHAT).await;
    keys.verify(new.header("x-meridian-receipt").unwrap())
        .unwrap();
    // Key 7 dropped from the set: its receipts name a key the set does not hold.
    let only_new = jwks(&signed(""), 9).await;
    assert!(matches!(
        only_new.verify(&old_receipt),
        Err(Invalid::UnknownKey(_))
    ));
    // Another key that claims key 9's id: the signature does not verify.
    let forger = receipt::Signer::from_secret(&key(3)).unwrap();
    let claims = keys
        .verify(new.header("x-meridian-receipt").unwrap())
        .unwrap();
    let forged = forger.sign(&claims);
    let (_, rest) = forged.split_once('.').unwrap();
    let genuine_header = new
        .header("x-meridian-receipt")
        .unwrap()
        .split('.')
        .next()
        .unwrap();
    assert_eq!(
        keys.verify(&format!("{genuine_header}.{rest}")),
        Err(Invalid::BadSignature)
    );
}

#[tokio::test]
async fn without_its_signing_key_a_deployment_that_signs_serves_nothing() {
    let p = signed("");
    let t = Fake::new(vec![("alpha", vec![ok_json(0)])]);
    let none = |_: &str| None;
    let a = chat_with(&p, &none, None, &t, &ACME_DE, CHAT).await;
    assert_eq!((a.status, a.code().as_str()), (503, "receipts_unavailable"));
    assert!(t.sent_to().is_empty());
    assert!(a
        .record
        .error_detail
        .as_deref()
        .unwrap()
        .contains("`receipt_key`"));
    let bad = |n: &str| (n == "receipt_key").then(|| "c2hvcnQ".to_string());
    let a = chat_with(&p, &bad, None, &t, &ACME_DE, CHAT).await;
    assert_eq!(a.status, 503);
    assert!(
        a.record.error_detail.as_deref().unwrap().contains("not 32"),
        "{:?}",
        a.record.error_detail
    );
    // A policy without receipts publishes no keys and signs nothing.
    let plain = load("");
    let a = call(
        &plain,
        &no_script(),
        "GET",
        "/.well-known/jwks.json",
        &[],
        "",
    )
    .await;
    assert_eq!((a.status, a.code().as_str()), (404, "receipts_not_enabled"));
    let t = Fake::new(vec![("alpha", vec![ok_json(0)])]);
    let a = chat(&plain, &t, &ACME_DE, CHAT).await;
    assert!(a.header("x-meridian-receipt").is_none());
    assert!(!a.log.contains("\"receipt\""));
    // `header = false`: the log line only.
    let p = signed("header = false");
    let t = Fake::new(vec![("alpha", vec![ok_json(0)])]);
    let a = ask(&p, 7, &t, CHAT).await;
    assert!(a.header("x-meridian-receipt").is_none());
    assert!(a.log.contains("\"receipt\""));
}

#[tokio::test]
async fn a_streams_response_receipt_says_it_is_not_final_and_its_log_receipt_attests_the_end() {
    let p = signed("");
    let usage = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4,\"total_tokens\":7}}\n\n";
    let t = Fake::new(vec![(
        "alpha",
        vec![sse(&[(0, EV1), (0, usage), (0, DONE)])],
    )]);
    let body =
        r#"{"model":"chat-model","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let a = ask(&p, 7, &t, body).await;
    assert_eq!(a.status, 200);
    let keys = jwks(&p, 7).await;
    let head = keys
        .verify(a.header("x-meridian-receipt").unwrap())
        .unwrap();
    assert_eq!(head["final"], false);
    assert!(head.get("usage").is_none() && head.get("cost_usd").is_none());
    let line = object(&a.log);
    let end = keys.verify(line["receipt"].as_str().unwrap()).unwrap();
    assert!(end.get("final").is_none());
    assert_eq!(end["usage"]["completion_tokens"], 4);
    assert_eq!(end["stream_outcome"], line["stream_outcome"]);
    assert!(receipt::differences(&line, &end).is_empty());
}

/// A log of `n` requests from one instance, numbered by the store's sequence.
async fn sequenced_log(n: usize) -> (Vec<String>, KeySet) {
    let p = signed("sequence = \"store\"");
    let store = MemStore::default();
    let t = Fake::new(vec![("alpha", (0..n).map(|_| ok_json(0)).collect())]);
    let mut lines = Vec::new();
    for _ in 0..n {
        let a = chat_with(&p, &secrets(7), Some(&store), &t, &ACME_DE, CHAT).await;
        lines.push(a.log);
    }
    (lines, jwks(&p, 7).await)
}

#[tokio::test]
async fn a_log_shows_an_edited_a_removed_and_two_swapped_lines_by_sequence_and_chain() {
    let (lines, keys) = sequenced_log(6).await;
    let whole = lines.join("\n");
    let r = receipt::verify_log(&whole, &keys);
    assert!(r.findings.is_empty(), "{:?}", r.findings);
    assert_eq!((r.lines, r.verified, r.sequenced, r.chained), (6, 6, 6, 6));
    // Line 2 edited (the provider it names), line 4 removed, lines 5 and 6 swapped.
    let mut edited = lines.clone();
    let mut line2 = object(&edited[1]);
    line2["provider"] = "beta".into();
    edited[1] = serde_json::to_string(&line2).unwrap();
    let tampered = [
        edited[0].clone(),
        edited[1].clone(),
        edited[2].clone(),
        edited[5].clone(),
        edited[4].clone(),
    ]
    .join("\n");
    let r = receipt::verify_log(&tampered, &keys);
    let at = |line: usize| -> Vec<&Kind> {
        r.findings
            .iter()
            .filter(|f| f.line == line)
            .map(|f| &f.kind)
            .collect()
    };
    assert_eq!(at(2), [&Kind::Altered(vec!["provider".into()])]);
    // The removed line: sequence number 4 (the chain's link 3) missing between line 3 (number
    // 3) and line 5, which holds number 5.
    assert!(
        at(5).iter().any(|k| matches!(
            k,
            Kind::SeqGap {
                from: 4,
                to: 4,
                after: 3
            }
        )),
        "{:?}",
        r.findings
    );
    assert!(
        at(5).iter().any(|k| matches!(
            k,
            Kind::ChainGap {
                from: 3,
                to: 3,
                after: 3,
                ..
            }
        )),
        "{:?}",
        r.findings
    );
    assert!(
        at(4).is_empty() && at(1).is_empty() && at(3).is_empty(),
        "{:?}",
        r.findings
    );
    // The swap: sequence number 5 after 6.
    assert!(
        at(5).iter().any(|k| matches!(
            k,
            Kind::SeqOrder {
                seq: 5,
                after_seq: 6,
                ..
            }
        )),
        "{:?}",
        r.findings
    );
    assert!(
        at(5).iter().any(|k| matches!(
            k,
            Kind::ChainOrder {
                n: 4,
                after_n: 5,
                ..
            }
        )),
        "{:?}",
        r.findings
    );
    assert_eq!(r.verified, 4);
    // A line copied: its number twice.
    let copied = [lines[0].as_str(), &lines[1], &lines[1], &lines[2]].join("\n");
    let r = receipt::verify_log(&copied, &keys);
    assert!(
        r.findings
            .iter()
            .any(|f| f.line == 3 && matches!(f.kind, Kind::Duplicate { seq: 2, first: 2 })),
        "{:?}",
        r.findings
    );
    // A line without its receipt, a line that is not JSON.
    let r = receipt::verify_log(
        &format!("{}\nnot json\n{{\"status\":200}}", lines[0]),
        &keys,
    );
    assert_eq!(
        r.findings
            .iter()
            .map(|f| (f.line, f.kind.clone()))
            .collect::<Vec<_>>(),
        [(2, Kind::NotJson), (3, Kind::NoReceipt)]
    );
}

/// A store that cannot be reached leaves the log receipt without a number; the request is
/// served and its receipt still verifies.
#[tokio::test]
async fn a_receipt_without_its_store_has_no_number() {
    let p = signed("sequence = \"store\"");
    let store = MemStore::default();
    store.down.set(true);
    let t = Fake::new(vec![("alpha", vec![ok_json(0)])]);
    let a = chat_with(&p, &secrets(7), Some(&store), &t, &ACME_DE, CHAT).await;
    assert_eq!(a.status, 200);
    let line = object(&a.log);
    let claims = jwks(&p, 7)
        .await
        .verify(line["receipt"].as_str().unwrap())
        .unwrap();
    assert!(claims.get("seq").is_none());
    assert_eq!(claims["chain"]["n"], 0);
}

/// Two instances that name their chains alike (here both `fresh-id`): a line of one followed by
/// the next link of the other does not follow it, and the verifier says so.
#[test]
fn a_link_whose_predecessor_is_another_line_is_reported() {
    let p = signed("");
    // Each instance's requests carry their own ids, so the two chains' lines differ.
    let run = |p: Policy, tag: &'static str| {
        std::thread::spawn(move || {
            let rt = paused_runtime();
            let t = Fake::new(vec![("alpha", vec![ok_json(0), ok_json(0)])]);
            (0..2)
                .map(|i| {
                    let id = format!("{tag}-{i}");
                    let mut h = ACME_DE.to_vec();
                    h.push(("x-request-id", &id));
                    rt.block_on(chat_with(&p, &secrets(7), None, &t, &h, CHAT))
                        .log
                })
                .collect::<Vec<String>>()
        })
        .join()
        .unwrap()
    };
    let (a, b) = (run(p.clone(), "a"), run(p.clone(), "b"));
    // Each chain verifies alone.
    let keys = paused_runtime().block_on(jwks(&p, 7));
    assert!(receipt::verify_log(&a.join("\n"), &keys)
        .findings
        .is_empty());
    let r = receipt::verify_log(&[a[0].as_str(), &b[1]].join("\n"), &keys);
    assert_eq!(
        r.findings
            .iter()
            .map(|f| (f.line, f.kind.clone()))
            .collect::<Vec<_>>(),
        [(
            2,
            Kind::ChainBroken {
                instance: "fresh-id".into(),
                n: 1
            }
        )]
    );
}

/// Any prompt and any key the caller sends stay out of both receipts.
#[test]
fn a_receipt_never_holds_prompt_text_or_keys() {
    use proptest::prelude::*;
    let p = signed("");
    let rt = paused_runtime();
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(256)
        .min(512);
    proptest!(ProptestConfig::with_cases(cases), |(
        prompt in "[A-Za-z0-9@+-]{12}[A-Za-z0-9 .,@+-]{0,180}[A-Za-z0-9]",
        api_key in "sk-[A-Za-z0-9]{20,40}",
        stream in any::<bool>(),
    )| {
        let body = serde_json::json!({
            "model": "chat-model",
            "stream": stream,
            "messages": [{"role": "user", "content": prompt}],
        }).to_string();
        let auth = format!("Bearer {api_key}");
        let headers = [JSON, ("authorization", auth.as_str()), ("cf-ipcountry", "DE")];
        let t = Fake::new(vec![("alpha", vec![if stream { sse(&[(0, EV1), (0, DONE)]) } else { ok_json(0) }])]);
        let a = rt.block_on(chat_with(&p, &secrets(7), None, &t, &headers, &body));
        let line = object(&a.log);
        let mut payloads = vec![line["receipt"].as_str().unwrap().to_string()];
        payloads.extend(a.header("x-meridian-receipt").map(str::to_string));
        for jws in payloads {
            let claims = String::from_utf8(B64.decode(jws.split('.').nth(1).unwrap()).unwrap()).unwrap();
            prop_assert!(!claims.contains(&prompt[..12]), "{claims}");
            prop_assert!(!claims.contains(&api_key), "{claims}");
            prop_assert!(!claims.contains(&key(7)), "the signing key: {claims}");
        }
    });
}
