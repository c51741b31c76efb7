//! Signed receipts end to end, under meridian-host with a real `redis-server` as the store: the
//! response's receipt verifies against the keys at /.well-known/jwks.json and names what served
//! it; the log of real requests (whole answers, a stream, a refusal) verifies line by line; a
//! copy with one line edited, one removed and two swapped reports each of them. Under WASI 0.2
//! (an instance per request) the store's sequence finds the removed and moved lines; under
//! WASI 0.3 (an instance serves many requests) the instance's chain finds them too.

mod support;

use support::redis::Redis;
use support::{policy_for, Meridian, Mock, Script};

use meridian::receipt::{self, KeySet, Kind};

/// A test signing key (32 bytes of 0x2a, base64url).
const SIGNING_KEY: &str = "KioqKioqKioqKioqKioqKioqKioqKioqKioqKioqKio";

#[tokio::test]
async fn a_log_of_real_requests_verifies_and_edits_removals_and_swaps_are_found() {
    let mut redis = Redis::start().await;
    let rc = redis.runtime_config();
    let rc = rc.to_str().unwrap();
    let up = Mock::with(|r, _| {
        if r.body["stream"] == true {
            Script::stream(&["fi", "ne"])
        } else {
            Script::ok("fine")
        }
    })
    .await;
    let policy = policy_for(
        &[("alpha", &up, "DE", "storage = \"FR\"\n")],
        "[settings.receipts]\nkey_secret = \"receipt_signing_key\"\nsequence = \"store\"\n\
         [[rules]]\nid = \"eu-only\"\nwhen = { client_country = [\"US\"] }\nrequire = { jurisdiction = [\"US\"] }\n",
    );
    let m = Meridian::custom(
        None,
        &policy,
        &[("SPIN_VARIABLE_RECEIPT_SIGNING_KEY", SIGNING_KEY)],
        &["--runtime-config-file", rc],
    )
    .await;
    let http = reqwest::Client::new();
    let keys = http
        .get(m.at("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(keys.status(), 200);
    let keys = KeySet::from_jwks(&keys.json().await.unwrap()).unwrap();

    let mut ids = Vec::new();
    let mut first_receipt = String::new();
    for i in 0..8 {
        let id = format!("evidence-{i}");
        let (country, stream) = match i {
            3 => ("US", false), // refused: no provider in the US
            5 => ("DE", true),
            _ => ("DE", false),
        };
        let r = http
            .post(m.at("/v1/chat/completions"))
            .header("cf-ipcountry", country)
            .header("x-request-id", &id)
            .json(&serde_json::json!({
                "model": "chat-model",
                "stream": stream,
                "messages": [{"role": "user", "content": format!("a private prompt {i}")}],
            }))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let provider = r
            .headers()
            .get("x-meridian-provider")
            .map(|v| v.to_str().unwrap().to_string());
        let storage = r
            .headers()
            .get("x-meridian-storage")
            .map(|v| v.to_str().unwrap().to_string());
        let receipt = match r.headers().get("x-meridian-receipt") {
            Some(v) => v.to_str().unwrap().to_string(),
            None => panic!("no receipt: {status} {:?}", r.headers()),
        };
        let _ = r.bytes().await.unwrap();
        let claims = keys
            .verify(&receipt)
            .expect("the response's receipt verifies");
        if i == 0 {
            first_receipt = receipt.clone();
        }
        assert_eq!(claims["request_id"], id.as_str());
        assert_eq!(claims["status"], status);
        assert_eq!(
            claims
                .get("provider")
                .and_then(|v| v.as_str())
                .map(str::to_string),
            provider
        );
        if i == 3 {
            assert_eq!(status, 451);
            assert_eq!(claims["error_code"], "residency_violation");
        } else {
            assert_eq!(status, 200);
            assert_eq!(
                (claims["jurisdiction"].as_str(), claims["storage"].as_str()),
                (Some("DE"), Some("FR"))
            );
            assert_eq!(storage.as_deref(), Some("FR"));
            assert_eq!(claims.get("final").is_some(), stream);
        }
        m.log_for(&id).await;
        ids.push(id);
    }
    let lines: Vec<String> = m
        .all_logs()
        .iter()
        .filter(|l| {
            l["request_id"]
                .as_str()
                .is_some_and(|r| r.starts_with("evidence-"))
        })
        .map(|l| l.to_string())
        .collect();
    // Eight requests, the stream with its opening line too.
    assert_eq!(lines.len(), 9, "{lines:#?}");
    assert!(lines.iter().all(|l| !l.contains("a private prompt")));
    let whole = lines.join("\n");
    let r = receipt::verify_log(&whole, &keys);
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
    assert_eq!((r.lines, r.verified, r.sequenced), (8, 8, 8));
    // One counter in the store numbers them (and the request for the keys, the first).
    assert_eq!(redis.int("meridian:v1:receipts:seq").await, 9);
    // Under WASI 0.3 one instance served them all, in a chain; under WASI 0.2 each was alone.
    if support::meridian::p3() {
        assert_eq!(r.chained, 8);
    } else {
        assert_eq!(r.chained, 0);
    }

    // The closing lines only: edit the 2nd (its country), remove the 4th, swap the 6th and 7th.
    let closing: Vec<&String> = lines
        .iter()
        .filter(|l| !l.contains("\"stream_open\""))
        .collect();
    let mut second: serde_json::Value = serde_json::from_str(closing[1]).unwrap();
    second["country"] = "US".into();
    let edited = second.to_string();
    let tampered = [
        closing[0].as_str(),
        &edited,
        closing[2],
        closing[4],
        closing[6],
        closing[5],
        closing[7],
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
    assert_eq!(
        at(2),
        [&Kind::Altered(vec!["country".into()])],
        "{:#?}",
        r.findings
    );
    // The removed 4th line: its sequence number missing between line 3 and the line after.
    assert!(
        r.findings
            .iter()
            .any(|f| matches!(f.kind, Kind::SeqGap { after: 3, .. })),
        "{:#?}",
        r.findings
    );
    // The swap: line 6 holds a lower number than line 5.
    assert!(
        at(6)
            .iter()
            .any(|k| matches!(k, Kind::SeqOrder { after: 5, .. })),
        "{:#?}",
        r.findings
    );
    if support::meridian::p3() {
        assert!(
            at(6)
                .iter()
                .any(|k| matches!(k, Kind::ChainOrder { after: 5, .. })),
            "{:#?}",
            r.findings
        );
        assert!(
            r.findings
                .iter()
                .any(|f| matches!(f.kind, Kind::ChainGap { after: 3, .. })),
            "{:#?}",
            r.findings
        );
    }
    // Nothing else is reported: lines 1, 3 and 7 are as written.
    assert!(
        at(1).is_empty() && at(3).is_empty() && at(7).is_empty(),
        "{:#?}",
        r.findings
    );

    // The same with the `meridian` tool, as an auditor runs it: the keys as served, the log and
    // the tampered copy as files.
    let cli = support::meridian::root().join("target/debug/meridian");
    assert!(
        cli.exists(),
        "{} is missing: ./scripts/test builds it (cargo build -p meridian-cli)",
        cli.display()
    );
    let dir = std::env::temp_dir().join(format!("meridian-e2e-evidence-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let jwks = http
        .get(m.at("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    std::fs::write(dir.join("jwks.json"), jwks).unwrap();
    std::fs::write(dir.join("whole.log"), &whole).unwrap();
    std::fs::write(dir.join("tampered.log"), &tampered).unwrap();
    let verify = |log: &str| {
        std::process::Command::new(&cli)
            .arg("verify")
            .arg("--keys")
            .arg(dir.join("jwks.json"))
            .arg(dir.join(log))
            .output()
            .unwrap()
    };
    let out = verify("whole.log");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.starts_with("8 of 8 lines verified; 8 numbered by the store's sequence"),
        "{text}"
    );
    let out = verify("tampered.log");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("line 2: differs from its receipt in country: the line was edited"),
        "{text}"
    );
    assert!(
        text.contains("is missing between line 3 and this one: a line removed"),
        "{text}"
    );
    assert!(text.contains("line 6: sequence number"), "{text}");
    assert!(text.contains("lines moved"), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();

    // A standard JOSE library (PyJWT) verifies a response's receipt with the served keys, and
    // refuses it with one claim changed.
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = first_receipt.split('.').collect();
    let mut payload: serde_json::Value =
        serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    payload["jurisdiction"] = "US".into();
    let tampered_receipt = format!(
        "{}.{}.{}",
        parts[0],
        b64.encode(payload.to_string()),
        parts[2]
    );
    let jwks = http
        .get(m.at("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let out = support::clients::run_capture(
        &support::clients::python(),
        "verify_receipt.py",
        &[
            ("JWKS", jwks.as_str()),
            ("RECEIPT", first_receipt.as_str()),
            ("TAMPERED", tampered_receipt.as_str()),
        ],
    )
    .await;
    let claims: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(claims["request_id"], "evidence-0");
    assert_eq!(claims["jurisdiction"], "DE");
    drop(m);
    redis.stop().await;
}
