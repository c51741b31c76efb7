use proptest::prelude::*;
use serde_json::{json, Map, Value};

use super::*;
use crate::policy::pii::BUILTIN_KINDS;

fn config() -> PiiConfig {
    PiiConfig {
        custom: vec![("employee_id".into(), r"\bEMP-[0-9]{6}\b".into())].into(),
        used: true,
    }
}

fn all_kinds(c: &PiiConfig) -> KindSet {
    KindSet::all(c.kind_count())
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

#[test]
fn placeholders_are_typed_numbered_and_stable_within_a_request() {
    let c = config();
    let s = Scanner::new(&c);
    let mut body = obj(json!({
        "model": "m",
        "messages": [
            {"role": "system", "content": "Staff EMP-004711 may answer."},
            {"role": "user", "content": "Mail jane@example.com or bob@example.org, again jane@example.com; IBAN DE89370400440532013000."}
        ]
    }));
    let r = redact_body(&s, &mut body, Endpoint::Chat, all_kinds(&c));
    assert_eq!(
        body["messages"][1]["content"],
        "Mail [EMAIL_1] or [EMAIL_2], again [EMAIL_1]; IBAN [IBAN_1]."
    );
    assert_eq!(
        body["messages"][0]["content"],
        "Staff [EMPLOYEE_ID_1] may answer."
    );
    assert_eq!(r.replaced, 5);
    assert_eq!(r.pairs.len(), 4);
}

#[test]
fn only_the_kinds_asked_for_are_redacted() {
    let c = config();
    let s = Scanner::new(&c);
    let mut only_email = KindSet::EMPTY;
    only_email.insert(EMAIL);
    let mut body = obj(
        json!({"messages": [{"role": "user", "content": "jane@example.com, +49 30 12345678"}]}),
    );
    redact_body(&s, &mut body, Endpoint::Chat, only_email);
    assert_eq!(body["messages"][0]["content"], "[EMAIL_1], +49 30 12345678");
}

#[test]
fn everything_the_model_reads_is_scanned_and_nothing_else() {
    let c = config();
    let s = Scanner::new(&c);
    let mut body = obj(json!({
        "model": "m",
        "user": "jane@example.com",
        "metadata": {"iban": "DE89370400440532013000"},
        "messages": [
            {"role": "user", "name": "bob@example.org", "content": [
                {"type": "text", "text": "call +44 20 7946 0958"},
                {"type": "image_url", "image_url": {"url": "https://x.test/a@b.com.png"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [{"function": {"arguments": "{\"to\": \"x@example.com\"}"}}]}
        ]
    }));
    let found = scan_body(&s, &mut body, Endpoint::Chat);
    // The participant's name, the text part and the tool call's arguments are read by the
    // model; `user` and `metadata` are not; the image is content no detector reads.
    assert_eq!(
        found.counts,
        vec![(EMAIL, 2), (PHONE, 1), (crate::policy::pii::UNSCANNABLE, 1)]
    );

    let mut completions =
        obj(json!({"prompt": ["a jane@example.com", "b 8.8.8.8"], "suffix": "c@example.com"}));
    assert_eq!(
        scan_body(&s, &mut completions, Endpoint::Completions).counts,
        vec![(EMAIL, 2), (IPV4, 1)]
    );
    let mut embeddings = obj(json!({"input": [[1, 2, 3], "AB123456C"]}));
    assert_eq!(
        scan_body(&s, &mut embeddings, Endpoint::Embeddings).counts,
        vec![(UK_NINO, 1)]
    );
}

#[test]
fn a_whole_answer_gets_the_originals_back() {
    let r = Restorer::new(vec![
        ("[EMAIL_1]".into(), "jane@example.com".into()),
        ("[IBAN_1]".into(), "DE89370400440532013000".into()),
    ]);
    let body = json!({
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Wrote to [EMAIL_1] about [IBAN_1] and [OTHER_1].",
            "tool_calls": [{"id": "c", "type": "function", "function": {"name": "send", "arguments": "{\"to\":\"[EMAIL_1]\"}"}}]}}]
    });
    let out: Value = serde_json::from_slice(&r.restore_body(body.to_string().as_bytes())).unwrap();
    assert_eq!(
        out["choices"][0]["message"]["content"],
        "Wrote to jane@example.com about DE89370400440532013000 and [OTHER_1]."
    );
    assert_eq!(
        out["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
        "{\"to\":\"jane@example.com\"}"
    );
    assert_eq!(r.restore_body(b"not json"), b"not json");
}

fn event(content: &str, finish: Option<&str>) -> Vec<u8> {
    let e = json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}]});
    format!("data: {e}\n\n").into_bytes()
}

/// The text a client reads from restored SSE bytes.
fn client_text(bytes: &[u8]) -> String {
    let mut out = String::new();
    for line in String::from_utf8_lossy(bytes).lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            continue;
        }
        let v: Value = serde_json::from_str(data).unwrap();
        if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
            out.push_str(t);
        }
    }
    out
}

#[test]
fn a_placeholder_split_across_events_at_every_position_is_restored() {
    let pairs = vec![
        ("[EMAIL_1]".to_string(), "jane@example.com".to_string()),
        ("[IBAN_1]".to_string(), "DE89370400440532013000".to_string()),
    ];
    let answer = "Send [IBAN_1] to [EMAIL_1] today [not one] [EMAIL_";
    let want = "Send DE89370400440532013000 to jane@example.com today [not one] [EMAIL_";
    for cut in 0..=answer.len() {
        for with_finish in [true, false] {
            let mut r = Restorer::new(pairs.clone());
            let mut wire = Vec::new();
            wire.extend(r.restore_stream(event(&answer[..cut], None)));
            let (rest, finish) = if with_finish {
                (&answer[cut..], Some("stop"))
            } else {
                (&answer[cut..], None)
            };
            wire.extend(r.restore_stream(event(rest, finish)));
            wire.extend(r.restore_stream(b"data: [DONE]\n\n".to_vec()));
            assert_eq!(
                client_text(&wire),
                want,
                "cut at {cut}, finish {with_finish}"
            );
            assert!(String::from_utf8_lossy(&wire).ends_with("data: [DONE]\n\n"));
        }
    }
}

#[test]
fn held_text_is_bounded_by_the_longest_placeholder() {
    let mut r = Restorer::new(vec![("[EMAIL_1]".into(), "a@example.com".into())]);
    // `[EMAIL` could still become a placeholder: held. `[EMAIL_1x` cannot: released.
    assert_eq!(
        client_text(&r.restore_stream(event("x [EMAIL", None))),
        "x "
    );
    assert_eq!(
        client_text(&r.restore_stream(event("_9 and on", None))),
        "[EMAIL_9 and on"
    );
    assert_eq!(
        client_text(&r.restore_stream(event("[this is a long aside]", None))),
        "[this is a long aside]"
    );
}

#[test]
fn custom_patterns_are_findings_of_their_own_kind() {
    let c = config();
    let s = Scanner::new(&c);
    let f = s.scan("badge EMP-123456, not EMP-12345");
    assert_eq!(
        f,
        vec![Finding {
            kind: BUILTIN_KINDS.len(),
            start: 6,
            end: 16
        }]
    );
    assert_eq!(c.kind_name(f[0].kind), "employee_id");
}

/// Values every detector must find when they stand as words in a sentence.
fn pii_value() -> impl Strategy<Value = String> {
    prop_oneof![
        (
            "[a-z]{1,8}",
            "[a-z]{1,8}",
            prop::sample::select(vec!["com", "de", "org", "co.uk"])
        )
            .prop_map(|(u, d, t)| format!("{u}.{u}@{d}.{t}")),
        prop::sample::select(vec![
            "DE89370400440532013000",
            "GB82 WEST 1234 5698 7654 32",
            "NL91ABNA0417164300",
        ])
        .prop_map(str::to_string),
        prop::sample::select(vec![
            "4111 1111 1111 1111",
            "5555555555554444",
            "378282246310005"
        ])
        .prop_map(str::to_string),
        (1u8..=223, 0u8..=255, 0u8..=255, 1u8..=254)
            .prop_map(|(a, b, c, d)| format!("{a}.{b}.{c}.{d}")),
        prop::sample::select(vec!["2001:db8::1", "fe80::1ff:fe23:4567:890a"])
            .prop_map(str::to_string),
        ("[2-9][0-9]{2}", "[2-9][0-9]{2}", "[0-9]{4}")
            .prop_map(|(a, b, c)| format!("+1 ({a}) {b}-{c}")),
        prop::sample::select(vec![
            "123-45-6789",
            "AB 12 34 56 C",
            "DE136695976",
            "EMP-004711"
        ])
        .prop_map(str::to_string),
    ]
}

fn filler() -> impl Strategy<Value = String> {
    "[a-zA-Z ,.:;!?()0-9-]{0,40}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(500)
    ))]

    /// Nothing a detector finds survives redaction: the redacted text has no finding of a
    /// redacted kind, and no value found in the original (nor any value the generator put in,
    /// which it knows without asking the detectors) appears in it.
    #[test]
    fn nothing_found_survives_redaction(
        parts in prop::collection::vec((filler(), pii_value()), 1..6),
        tail in filler(),
    ) {
        let c = config();
        let s = Scanner::new(&c);
        let mut text = String::new();
        let mut inserted = Vec::new();
        for (f, v) in &parts {
            text.push_str(f);
            text.push(' ');
            text.push_str(v);
            text.push(' ');
            inserted.push(v.clone());
        }
        text.push_str(&tail);
        let found: Vec<String> = s.scan(&text).iter().map(|f| text[f.start..f.end].to_string()).collect();
        let mut r = Redaction::default();
        let out = r.redact_text(&s, &text, all_kinds(&c)).unwrap_or_else(|| text.clone());
        prop_assert!(s.scan(&out).is_empty(), "still found in {out:?}: {:?}", s.scan(&out));
        // Each copy that was found or inserted is gone; the same characters may remain only
        // where they were neither (`::8` found in `::8?` but not in `::8g`, which is no address).
        let count = |hay: &str, v: &str| hay.matches(v).count();
        for v in found.iter().chain(&inserted) {
            let taken = found.iter().filter(|f| *f == v).count()
                .max(inserted.iter().filter(|i| *i == v).count());
            prop_assert!(
                count(&out, v) + taken <= count(&text, v),
                "{v:?} survived in {out:?}"
            );
        }
        // And restoring gives the original text back.
        let back = Restorer::new(r.pairs.clone()).replace_all(&out);
        prop_assert_eq!(back, text);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("FUZZ_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(2000)
    ))]

    /// Any text, dense in the characters detectors look at or arbitrary Unicode: findings are
    /// sorted, disjoint and on char boundaries, and redacting then restoring gives the text back.
    #[test]
    fn scanning_any_text_is_safe_and_reversible(
        text in prop_oneof![
            "[0-9A-Za-z+()./: @_\\[\\]-]{0,300}",
            any::<String>(),
            "([A-Z]{2}[0-9]{2}[ 0-9A-Z]{10,30}|\\+?[0-9 ()./-]{6,25}|[a-z.]{1,8}@[a-z.]{1,12}|[0-9a-f:]{2,30}|.{0,5}){1,8}",
        ],
    ) {
        let c = config();
        let s = Scanner::new(&c);
        let found = s.scan(&text);
        let mut last_end = 0;
        for f in &found {
            prop_assert!(f.start >= last_end && f.end > f.start && f.end <= text.len());
            prop_assert!(text.is_char_boundary(f.start) && text.is_char_boundary(f.end));
            last_end = f.end;
        }
        let mut r = Redaction::default();
        if let Some(out) = r.redact_text(&s, &text, all_kinds(&c)) {
            // Text that already holds a placeholder-shaped string cannot round-trip; skip it.
            if !text.contains('[') {
                prop_assert_eq!(Restorer::new(r.pairs.clone()).replace_all(&out), text);
            }
        }
    }
}

/// A chunk of streamed tool-call arguments (OpenAI's form), for choice 0 and tool `tool`.
fn tool_event(tool: u64, args: &str, finish: Option<&str>) -> Vec<u8> {
    let e = json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": {"tool_calls": [{"index": tool, "function": {"arguments": args}}]}, "finish_reason": finish}]});
    format!("data: {e}\n\n").into_bytes()
}

/// The arguments of each tool call a client reassembles from restored SSE bytes.
fn client_args(bytes: &[u8]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in String::from_utf8_lossy(bytes).lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            continue;
        }
        let v: Value = serde_json::from_str(data).unwrap();
        for c in v["choices"][0]["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let i = c["index"].as_u64().unwrap() as usize;
            if out.len() <= i {
                out.resize(i + 1, String::new());
            }
            out[i].push_str(c["function"]["arguments"].as_str().unwrap_or(""));
        }
    }
    out
}

#[test]
fn placeholders_in_streamed_tool_call_arguments_split_anywhere_are_restored() {
    // An original with a quote must stay valid JSON inside the arguments.
    let pairs = vec![
        ("[EMAIL_1]".to_string(), "jane@example.com".to_string()),
        ("[NAME_1]".to_string(), "O\"Neil".to_string()),
    ];
    let args = r#"{"to":"[EMAIL_1]","cc":"[NAME_1]","note":"[x]"}"#;
    for cut in 0..=args.len() {
        for second_tool in [false, true] {
            let mut r = Restorer::new(pairs.clone());
            let mut wire = Vec::new();
            wire.extend(r.restore_stream(tool_event(0, &args[..cut], None)));
            if second_tool {
                // Another tool call's arguments interleave: held text is kept per call.
                wire.extend(r.restore_stream(tool_event(1, "{\"a\":\"[EMAI", None)));
                wire.extend(r.restore_stream(tool_event(1, "L_1]\"}", None)));
            }
            wire.extend(r.restore_stream(tool_event(0, &args[cut..], Some("tool_calls"))));
            wire.extend(r.restore_stream(b"data: [DONE]\n\n".to_vec()));
            let got = client_args(&wire);
            let parsed: Value = serde_json::from_str(&got[0])
                .unwrap_or_else(|e| panic!("cut {cut}: {e}: {}", got[0]));
            assert_eq!(
                parsed,
                json!({"to": "jane@example.com", "cc": "O\"Neil", "note": "[x]"}),
                "cut at {cut}"
            );
            if second_tool {
                assert_eq!(got[1], r#"{"a":"jane@example.com"}"#, "cut at {cut}");
            }
        }
    }
}

#[test]
fn anthropic_tool_use_input_gets_the_originals_back() {
    let r = Restorer::new(vec![("[EMAIL_1]".into(), "a\"b@example.com".into())]);
    let body = json!({"type": "message", "content": [
        {"type": "tool_use", "id": "t", "name": "send", "input": {"to": "[EMAIL_1]", "n": 2}}
    ]});
    let out: Value = serde_json::from_slice(&r.restore_body(body.to_string().as_bytes())).unwrap();
    assert_eq!(
        out["content"][0]["input"],
        json!({"to": "a\"b@example.com", "n": 2})
    );
}

/// Redacting and restoring 20,000 distinct values gives each its own placeholder and every one
/// back. (The cost's growth with the number of findings is measured in instructions by
/// `benches/pii.rs`, not timed here.)
#[test]
fn redaction_and_restoring_handle_many_distinct_values() {
    let c = config();
    let s = Scanner::new(&c);
    let n = 20_000;
    let text: String = (0..n).map(|i| format!("user{i}@example.com ")).collect();
    let mut r = Redaction::default();
    let red = r
        .redact_text(&s, &text, KindSet::all(c.kind_count()))
        .unwrap();
    assert_eq!(r.pairs.len(), n);
    assert_eq!(r.replaced as usize, n);
    assert!(red.starts_with("[EMAIL_1] [EMAIL_2] "), "{}", &red[..40]);
    let restorer = Restorer::new(r.pairs.clone());
    assert_eq!(restorer.replace_all(&red), text);
}
