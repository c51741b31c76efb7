//! `meridian keygen` and `meridian verify` as an auditor runs them: a key made by keygen signs
//! a log (signed here with the library's signer, as the component signs), the JWK Set keygen
//! printed verifies it, and an edited, a removed and two swapped lines are each reported with
//! their line numbers and exit status 1.

use std::process::Command;

use meridian::receipt;

fn meridian() -> Command {
    Command::new(env!("CARGO_BIN_EXE_meridian"))
}

/// keygen's secret and JWK Set.
fn keygen() -> (String, String) {
    let out = meridian().arg("keygen").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let secret = text
        .lines()
        .find_map(|l| l.strip_prefix("secret: "))
        .expect("a secret line")
        .to_string();
    let jwks = text
        .lines()
        .find(|l| l.starts_with("{\"keys\""))
        .expect("a JWK Set line")
        .to_string();
    (secret, jwks)
}

/// A log line as the component writes it, with its receipt (numbered `seq`).
fn line(signer: &receipt::Signer, i: u64) -> String {
    let mut l: serde_json::Map<String, serde_json::Value> =
        serde_json::from_value(serde_json::json!({
            "ts_ms": 1_765_000_000_000u64 + i,
            "request_id": format!("req-{i}"),
            "method": "POST",
            "path": "/v1/chat/completions",
            "status": 200,
            "tenant": "acme",
            "country": "DE",
            "provider": "eu-a",
            "jurisdiction": "DE",
            "rules": [],
            "candidates": ["eu-a"],
            "excluded": [],
            "attempts": [{"provider": "eu-a", "outcome": "ok", "ms": 12}],
            "duration_ms": 15,
        }))
        .unwrap();
    let mut claims = receipt::claims(&l, true);
    claims.insert("seq".into(), (i + 1).into());
    let jws = receipt::sign_chained(signer, claims, &|| "instance-a".to_string());
    l.insert("receipt".into(), jws.into());
    serde_json::to_string(&l).unwrap()
}

#[test]
fn keygen_keys_verify_a_log_and_each_tampering_is_reported_by_line() {
    let (secret, jwks) = keygen();
    let signer = receipt::Signer::from_secret(&secret).unwrap();
    assert!(jwks.contains(signer.kid()) && !jwks.contains(&secret));
    let dir = std::env::temp_dir().join(format!("meridian-verify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let keys = dir.join("jwks.json");
    std::fs::write(&keys, &jwks).unwrap();
    let lines: Vec<String> = (0..6).map(|i| line(&signer, i)).collect();
    let log = dir.join("meridian.log");
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();
    let out = meridian()
        .arg("verify")
        .arg("--keys")
        .arg(&keys)
        .arg(&log)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("6 of 6 lines verified; 6 numbered by the store's sequence, 6 chained within an instance; 0 finding(s)"), "{text}");

    // Line 2's tenant edited, line 4 removed, lines 5 and 6 swapped.
    let edited = lines[1].replace("\"tenant\":\"acme\"", "\"tenant\":\"globex\"");
    let tampered = [&lines[0], &edited, &lines[2], &lines[5], &lines[4]]
        .map(String::as_str)
        .join("\n");
    std::fs::write(&log, tampered).unwrap();
    let out = meridian()
        .arg("verify")
        .arg("--keys")
        .arg(&keys)
        .arg(&log)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("line 2: differs from its receipt in tenant: the line was edited"),
        "{text}"
    );
    assert!(
        text.contains(
            "line 5: sequence number 4 is missing between line 3 and this one: a line removed"
        ),
        "{text}"
    );
    assert!(
        text.contains("line 5: sequence number 5 comes after line 4's 6: lines moved"),
        "{text}"
    );
    assert!(
        text.contains(
            "line 5: instance instance-a's link 4 comes after line 4's link 5: lines moved"
        ),
        "{text}"
    );
    assert!(
        !text.contains("line 1:") && !text.contains("line 3:"),
        "{text}"
    );
    let out = meridian()
        .args(["verify", "--json", "--keys"])
        .arg(&keys)
        .arg(&log)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (j["lines"].as_u64(), j["verified"].as_u64()),
        (Some(5), Some(4))
    );
    assert_eq!(
        j["findings"][0],
        serde_json::json!({"line": 2, "finding": "differs from its receipt in tenant: the line was edited"})
    );

    // One receipt, and a key set without the signing key.
    let one = lines[0]
        .split("\"receipt\":\"")
        .nth(1)
        .unwrap()
        .trim_end_matches("\"}");
    let out = meridian()
        .args(["verify", "--keys"])
        .arg(&keys)
        .args(["--receipt", one])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"request_id\": \"req-0\""));
    let (_, other) = keygen();
    std::fs::write(&keys, other).unwrap();
    let out = meridian()
        .args(["verify", "--keys"])
        .arg(&keys)
        .args(["--receipt", one])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("names a key not in the key set"));
    // A key file that is no JWK Set is an error (2), not a finding.
    std::fs::write(&keys, "{}").unwrap();
    let out = meridian()
        .arg("verify")
        .arg("--keys")
        .arg(&keys)
        .arg(&log)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).unwrap();
}
