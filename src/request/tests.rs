//! The one reading, per wire, over every item type and content part of the providers' API
//! references (`fixtures/reference.json`, with its source). The oracle is the fixtures'
//! markers: a planted address in every place the model reads is scanned and redacted; every
//! media or file reference counts and raises its capability; nothing else is raised.

use proptest::prelude::*;
use serde_json::{json, Map, Value};

use super::kinds::{AnthropicTool, Block, ChatPart, Item, Part, ResponsesTool};
use super::*;
use crate::policy::pii::{KindSet, PiiConfig};

const REFERENCE: &str = include_str!("fixtures/reference.json");

fn reference() -> Value {
    serde_json::from_str(REFERENCE).unwrap()
}

fn entries<'a>(r: &'a Value, wire: &str, list: &str) -> Vec<&'a Value> {
    r[wire][list]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

/// What the markers in a generated body promise.
#[derive(Debug, Default)]
struct Planted {
    emails: Vec<String>,
    media: u64,
    unseen: u64,
    caps: Vec<&'static str>,
}

impl Planted {
    /// Replaces the markers of one entry's example, each with a fresh value.
    fn fill(&mut self, entry: &Value, seed: u32) -> Value {
        let mut text = entry["example"].to_string();
        for (marker, what) in [("@TEXT@", 0), ("@URL@", 1), ("@FILE@", 2), ("@INLINE@", 3)] {
            while let Some(at) = text.find(marker) {
                let n = self.emails.len() + self.media as usize;
                let value = match what {
                    0 => {
                        let e = format!("planted{n}.s{seed}@example.com");
                        self.emails.push(e.clone());
                        e
                    }
                    1 => {
                        self.media += 1;
                        self.unseen += 1;
                        self.caps.push("remote_media");
                        format!("https://media.example/{n}.png")
                    }
                    2 => {
                        self.media += 1;
                        self.unseen += 1;
                        self.caps.push("files");
                        format!("file-{n}")
                    }
                    _ => {
                        self.media += 1;
                        "data:image/png;base64,iVBORw0KGgo=".to_string()
                    }
                };
                text.replace_range(at..at + marker.len(), &value);
            }
        }
        self.media += entry["media"].as_u64().unwrap_or(0);
        for c in entry["caps"].as_array().into_iter().flatten() {
            let c = c.as_str().unwrap();
            let known = crate::policy::Capability::from_name(c).unwrap();
            self.caps.push(known.name());
        }
        serde_json::from_str(&text).unwrap()
    }
}

fn pii_config() -> PiiConfig {
    PiiConfig {
        custom: Vec::new().into(),
        used: true,
    }
}

/// Builds a body of `wire` from the chosen entries (indices into each list, wrapping).
fn build(wire: &str, picks: &[usize], seed: u32, placed_deep: bool) -> (Endpoint, Value, Planted) {
    let r = reference();
    let mut p = Planted::default();
    let pick = |list: &str, p: &mut Planted| -> Vec<Value> {
        let all = entries(&r, wire, list);
        if all.is_empty() {
            return Vec::new();
        }
        picks
            .iter()
            .map(|i| all[i % all.len()])
            .map(|e| p.fill(e, seed))
            .collect()
    };
    let mut body = Map::new();
    body.insert("model".into(), json!("m"));
    // Top-level fields: one entry per name, so that the markers counted are those sent.
    let all_fields = entries(&r, wire, "fields");
    let mut used = std::collections::BTreeSet::new();
    for i in picks {
        if all_fields.is_empty() {
            break;
        }
        let e = all_fields[i % all_fields.len()];
        let name = e["field"].as_str().unwrap();
        if used.insert(name) {
            let v = p.fill(e, seed);
            body.insert(name.into(), v);
        }
    }
    let endpoint = match wire {
        "chat" => {
            let parts = pick("parts", &mut p);
            let mut messages = pick("messages", &mut p);
            messages.push(json!({"role": "user", "content": parts}));
            body.insert("messages".into(), Value::Array(messages));
            let tools = pick("tools", &mut p);
            if !tools.is_empty() {
                body.insert("tools".into(), Value::Array(tools));
            }
            Endpoint::Chat
        }
        "completions" => Endpoint::Completions,
        "embeddings" => Endpoint::Embeddings,
        "messages" => {
            let blocks = pick("blocks", &mut p);
            // Blocks a tool result may hold go inside one when asked to.
            let (inner, outer): (Vec<Value>, Vec<Value>) = blocks.into_iter().partition(|b| {
                placed_deep
                    && matches!(
                        b["type"].as_str(),
                        Some("text" | "image" | "document" | "search_result")
                    )
            });
            let mut content = outer;
            if !inner.is_empty() {
                content.push(json!({"type": "tool_result", "tool_use_id": "t", "content": inner}));
            }
            body.insert(
                "messages".into(),
                json!([{"role": "user", "content": content}]),
            );
            body.insert("max_tokens".into(), json!(10));
            let tools = pick("tools", &mut p);
            if !tools.is_empty() {
                body.insert("tools".into(), Value::Array(tools));
            }
            Endpoint::Messages
        }
        "responses" => {
            let parts = pick("parts", &mut p);
            let mut items = pick("items", &mut p);
            // Parts a function's output may hold go there when asked to.
            let (inner, outer): (Vec<Value>, Vec<Value>) = parts.into_iter().partition(|x| {
                placed_deep
                    && matches!(
                        x["type"].as_str(),
                        Some("input_text" | "input_image" | "input_file")
                    )
            });
            items.push(json!({"type": "message", "role": "user", "content": outer}));
            if !inner.is_empty() {
                items
                    .push(json!({"type": "function_call_output", "call_id": "c", "output": inner}));
            }
            body.insert("input".into(), Value::Array(items));
            let tools = pick("tools", &mut p);
            if !tools.is_empty() {
                body.insert("tools".into(), Value::Array(tools));
            }
            Endpoint::Responses
        }
        _ => unreachable!(),
    };
    (endpoint, Value::Object(body), p)
}

/// Reads a generated body and checks it against what was planted.
fn check(wire: &str, picks: &[usize], seed: u32, deep: bool) -> Result<(), TestCaseError> {
    let (endpoint, body, planted) = build(wire, picks, seed, deep);
    let config = pii_config();
    let scanner = crate::pii::Scanner::new(&config);
    let mut body = body.as_object().unwrap().clone();
    let mut texts: Vec<String> = Vec::new();
    let reading = read(
        endpoint,
        &mut body,
        &[],
        UnknownFields::Refuse,
        &mut |_, t| texts.push(t.clone()),
    );
    let reading = match reading {
        Ok(r) => r,
        Err(e) => return Err(TestCaseError::fail(format!("{wire}: {e:?}\n{body:?}"))),
    };
    // Every planted address stands in a text handed over, and the scan finds each.
    let emails_found: usize = texts
        .iter()
        .flat_map(|t| scanner.scan(t))
        .filter(|f| f.kind == crate::pii::EMAIL)
        .count();
    for e in &planted.emails {
        prop_assert!(
            texts.iter().any(|t| t.contains(e.as_str())),
            "{wire}: `{e}` was not handed over as text: {body:?}"
        );
    }
    prop_assert!(emails_found >= planted.emails.len(), "{wire}: scan");
    // Media: every reference counted, unseen ones apart, capabilities exactly those planted.
    prop_assert_eq!(
        reading.media,
        planted.media,
        "{}: media in {:?}",
        wire,
        body
    );
    prop_assert_eq!(reading.unseen_media, planted.unseen, "{}: unseen", wire);
    let mut want: Vec<&str> = planted.caps.clone();
    want.sort_unstable();
    want.dedup();
    let mut got = reading.capabilities.names();
    got.sort_unstable();
    prop_assert_eq!(got, want, "{}: capabilities of {:?}", wire, body);
    // Redaction walks the same texts: no planted address is left anywhere in the body.
    let mut redaction = crate::pii::Redaction::default();
    let kinds = KindSet::all(config.kind_count());
    let _ = texts_after(endpoint, &mut body, &mut |t| {
        if let Some(new) = redaction.redact_text(&scanner, t, kinds) {
            *t = new;
        }
    });
    let sent = Value::Object(body).to_string();
    for e in &planted.emails {
        prop_assert!(
            !sent.contains(e.as_str()),
            "{wire}: `{e}` survived redaction"
        );
    }
    Ok(())
}

fn texts_after(
    endpoint: Endpoint,
    body: &mut Map<String, Value>,
    f: &mut dyn FnMut(&mut String),
) -> Reading {
    texts(endpoint, body, &mut |_, t| f(t))
}

fn picks() -> impl Strategy<Value = (Vec<usize>, u32, bool)> {
    (
        proptest::collection::vec(0usize..64, 1..8),
        any::<u32>(),
        any::<bool>(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256).min(2_000)
    ))]

    #[test]
    fn chat_reads_every_text_and_reference((p, seed, deep) in picks()) {
        check("chat", &p, seed, deep)?;
    }

    #[test]
    fn completions_reads_every_text((p, seed, deep) in picks()) {
        check("completions", &p, seed, deep)?;
    }

    #[test]
    fn embeddings_reads_every_text((p, seed, deep) in picks()) {
        check("embeddings", &p, seed, deep)?;
    }

    #[test]
    fn messages_reads_every_text_and_reference((p, seed, deep) in picks()) {
        check("messages", &p, seed, deep)?;
    }

    #[test]
    fn responses_reads_every_text_and_reference((p, seed, deep) in picks()) {
        check("responses", &p, seed, deep)?;
    }

    /// A string, a fraction, a negative number or a boolean in an integer field is refused with
    /// the field's name, on every wire.
    #[test]
    fn a_non_integer_in_an_integer_field_is_refused_by_name(
        e in 0usize..5,
        bad in prop_oneof![
            Just(json!("100000")),
            Just(json!(4.0)),
            Just(json!(2.5)),
            Just(json!(-1)),
            Just(json!(true)),
            Just(json!([1])),
        ],
    ) {
        let endpoint = [Endpoint::Chat, Endpoint::Completions, Endpoint::Embeddings, Endpoint::Messages, Endpoint::Responses][e];
        // The integer fields of each protocol, from the providers' references.
        let integer_fields: &[&str] = match endpoint {
            Endpoint::Chat => &["max_completion_tokens", "max_tokens", "n", "top_logprobs", "seed"],
            Endpoint::Completions => &["best_of", "logprobs", "max_tokens", "n", "seed"],
            Endpoint::Embeddings => &["dimensions"],
            Endpoint::Messages => &["max_tokens", "top_k"],
            Endpoint::Responses => &["max_output_tokens", "max_tool_calls", "top_logprobs"],
        };
        for field in integer_fields {
            if *field == "seed" && bad == json!(-1) {
                continue; // a seed may be negative
            }
            let mut body = json!({"model": "m", (*field): bad.clone()}).as_object().unwrap().clone();
            let err = read(endpoint, &mut body, &[], UnknownFields::Drop, &mut |_, _| {}).unwrap_err();
            prop_assert_eq!(err.param, Some(*field));
            prop_assert_eq!(err.code, "invalid_type");
            prop_assert!(err.message.contains(&format!("`{field}`")), "{}", err.message);
        }
    }
}

/// Every type the walk knows has a fixture, so the properties above generate it.
#[test]
fn every_known_type_has_a_reference_fixture() {
    let r = reference();
    let types = |wire: &str, list: &str| -> Vec<String> {
        entries(&r, wire, list)
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_string())
            .collect()
    };
    let chat = types("chat", "parts");
    for k in ChatPart::ALL {
        if *k != ChatPart::Refusal {
            assert!(chat.contains(&k.name().to_string()), "chat part {k:?}");
        }
    }
    let blocks = types("messages", "blocks");
    let nested = r["messages"]["blocks"].to_string();
    for k in Block::ALL {
        assert!(
            blocks.contains(&k.name().to_string())
                || nested.contains(&format!("\"type\":\"{}\"", k.name())),
            "block {k:?}"
        );
    }
    let items = types("responses", "items");
    for k in Item::ALL {
        assert!(items.contains(&k.name().to_string()), "item {k:?}");
    }
    let parts = types("responses", "parts");
    for k in Part::ALL {
        assert!(parts.contains(&k.name().to_string()), "part {k:?}");
    }
    for t in types("responses", "tools") {
        assert!(ResponsesTool::parse(&t).is_some(), "responses tool {t}");
    }
    for t in types("messages", "tools") {
        let kind = (t != "client").then_some(t.as_str());
        assert!(AnthropicTool::parse(kind).is_some(), "messages tool {t}");
    }
}

/// A type in no table is refused by its path, in both modes of `unknown_fields`.
#[test]
fn an_unknown_type_is_refused_by_path_in_both_modes() {
    for mode in [UnknownFields::Refuse, UnknownFields::Drop] {
        let cases = [
            (
                Endpoint::Responses,
                json!({"model": "m", "input": [{"type": "hologram_call"}]}),
                "input[0].type",
            ),
            (
                Endpoint::Responses,
                json!({"model": "m", "input": [{"type": "function_call_output", "call_id": "c", "output": [{"type": "input_video", "url": "x"}]}]}),
                "input[0].output[0].type",
            ),
            (
                Endpoint::Messages,
                json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "video"}]}]}]}),
                "messages[0].content[0].content[0].type",
            ),
            (
                Endpoint::Chat,
                json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "video_url"}]}]}),
                "messages[0].content[0].type",
            ),
            (
                Endpoint::Responses,
                json!({"model": "m", "tools": [{"type": "namespace", "tools": [{"type": "image_generation"}]}]}),
                "tools[0].tools[0].type",
            ),
        ];
        for (endpoint, body, path) in cases {
            let mut body = body.as_object().unwrap().clone();
            let err = read(endpoint, &mut body, &[], mode, &mut |_, _| {}).unwrap_err();
            assert_eq!(err.path, path);
            assert_eq!(err.code, "unknown_parameter");
        }
    }
}

/// The cases the issue names: a function's output that points at a URL or a file makes the
/// provider fetch it, and the texts of earlier turns' tools and reasoning are read.
#[test]
fn tool_outputs_with_media_raise_their_capability_and_count() {
    for (kind, part, cap) in [
        (
            "function_call_output",
            json!({"type": "input_image", "image_url": "http://10.0.0.7/admin"}),
            "remote_media",
        ),
        (
            "custom_tool_call_output",
            json!({"type": "input_file", "file_url": "http://169.254.169.254/"}),
            "remote_media",
        ),
        (
            "function_call_output",
            json!({"type": "input_file", "file_id": "file-1"}),
            "files",
        ),
    ] {
        let mut body =
            json!({"model": "m", "input": [{"type": kind, "call_id": "c", "output": [part]}]})
                .as_object()
                .unwrap()
                .clone();
        let r = read(
            Endpoint::Responses,
            &mut body,
            &[],
            UnknownFields::Refuse,
            &mut |_, _| {},
        )
        .unwrap();
        assert_eq!(r.capabilities.names(), vec![cap], "{kind}");
        assert_eq!((r.media, r.unseen_media), (1, 1), "{kind}");
    }
    let mut body = json!({"model": "m", "input": [{"type": "computer_call_output", "call_id": "c", "output": {"type": "computer_screenshot", "image_url": "https://x/y.png"}}]})
        .as_object()
        .unwrap()
        .clone();
    let r = read(
        Endpoint::Responses,
        &mut body,
        &[],
        UnknownFields::Refuse,
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(r.capabilities.names(), vec!["remote_media"]);
}

#[test]
fn output_bounds_and_history_are_read_once() {
    let mut body = json!({"model": "m", "max_tokens": 100, "max_completion_tokens": 300, "n": 2})
        .as_object()
        .unwrap()
        .clone();
    let r = read(
        Endpoint::Chat,
        &mut body,
        &[],
        UnknownFields::Refuse,
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(
        (r.max_output, r.completions, r.output_bound()),
        (Some(300), 2, Some(600))
    );
    for body in [
        json!({"model": "m", "previous_response_id": "resp_x", "input": "hi"}),
        json!({"model": "m", "conversation": "conv_1", "input": "hi"}),
        json!({"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]}),
    ] {
        let mut body = body.as_object().unwrap().clone();
        let r = read(
            Endpoint::Responses,
            &mut body,
            &[],
            UnknownFields::Refuse,
            &mut |_, _| {},
        )
        .unwrap();
        assert!(r.stored_history, "{body:?}");
    }
    let mut body = json!({"model": "m", "n": 0}).as_object().unwrap().clone();
    let err = read(
        Endpoint::Chat,
        &mut body,
        &[],
        UnknownFields::Refuse,
        &mut |_, _| {},
    )
    .unwrap_err();
    assert_eq!((err.code, err.param), ("invalid_value", Some("n")));
}

/// A bound above the documented ceilings is refused naming both numbers, so the reservation
/// never saturates (and a saturated counter is never mistaken for a store outage).
#[test]
fn output_and_completions_above_the_ceilings_are_refused_naming_both_numbers() {
    for (field, value, most) in [
        (
            "max_tokens",
            9_223_372_036_854_775_807u64,
            MAX_OUTPUT_TOKENS,
        ),
        ("max_completion_tokens", (1 << 20) + 1, MAX_OUTPUT_TOKENS),
        ("n", 129, MAX_COMPLETIONS),
    ] {
        let mut body = json!({"model": "m", (field): value})
            .as_object()
            .unwrap()
            .clone();
        let err = read(
            Endpoint::Chat,
            &mut body,
            &[],
            UnknownFields::Refuse,
            &mut |_, _| {},
        )
        .unwrap_err();
        assert_eq!((err.code, err.param), ("invalid_value", Some(field)));
        assert!(
            err.message.contains(&value.to_string()) && err.message.contains(&most.to_string()),
            "{}",
            err.message
        );
    }
    let mut body = json!({"model": "m", "max_tokens": 1 << 20, "n": 128})
        .as_object()
        .unwrap()
        .clone();
    let r = read(
        Endpoint::Chat,
        &mut body,
        &[],
        UnknownFields::Refuse,
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(r.output_bound(), Some((1 << 20) * 128));
}

/// A billing choice dearer than the catalog's prices is `priced_options`, as
/// docs/request-fields.md lists them; the default tier, text output and other betas are not. A
/// provider-run search that is a field (chat's `web_search_options`, Azure's `data_sources`)
/// counts as one call: the model reads the conversation twice.
#[test]
fn dearer_billing_choices_and_search_fields_are_read() {
    let reading = |endpoint, body: Value, headers: &[(String, String)]| {
        let mut body = body.as_object().unwrap().clone();
        read(
            endpoint,
            &mut body,
            headers,
            UnknownFields::Refuse,
            &mut |_, _| {},
        )
        .unwrap()
    };
    let priced = |r: &Reading| r.capabilities.contains(Capability::PricedOptions);
    let m = || json!([{"role": "user", "content": "hi"}]);
    for (body, dearer) in [
        (
            json!({"model": "m", "messages": m(), "service_tier": "priority"}),
            true,
        ),
        (
            json!({"model": "m", "messages": m(), "service_tier": "scale"}),
            true,
        ),
        (
            json!({"model": "m", "messages": m(), "service_tier": "default"}),
            false,
        ),
        (
            json!({"model": "m", "messages": m(), "service_tier": "flex"}),
            false,
        ),
        (
            json!({"model": "m", "messages": m(), "modalities": ["text", "audio"]}),
            true,
        ),
        (
            json!({"model": "m", "messages": m(), "modalities": ["text"]}),
            false,
        ),
        (
            json!({"model": "m", "messages": m(), "audio": {"voice": "alloy", "format": "wav"}}),
            true,
        ),
        (json!({"model": "m", "messages": m(), "audio": null}), false),
    ] {
        assert_eq!(
            priced(&reading(Endpoint::Chat, body.clone(), &[])),
            dearer,
            "{body}"
        );
    }
    let r = reading(
        Endpoint::Responses,
        json!({"model": "m", "input": "hi", "service_tier": "priority"}),
        &[],
    );
    assert!(priced(&r));
    let beta = |b: &str| vec![("anthropic-beta".to_string(), b.to_string())];
    let messages = json!({"model": "m", "max_tokens": 5, "messages": m()});
    for (b, dearer) in [
        ("context-1m-2025-08-07", true),
        ("extended-cache-ttl-2025-04-11", true),
        ("interleaved-thinking-2025-05-14", false),
    ] {
        let r = reading(Endpoint::Messages, messages.clone(), &beta(b));
        assert_eq!(priced(&r), dearer, "{b}");
    }
    for body in [
        json!({"model": "m", "messages": m(), "web_search_options": {}}),
        json!({"model": "m", "messages": m(), "data_sources": [{"type": "azure_search"}]}),
    ] {
        let r = reading(Endpoint::Chat, body.clone(), &[]);
        assert_eq!((r.provider_tools, r.model_reads()), (1, Some(2)), "{body}");
    }
    let plain = reading(Endpoint::Chat, json!({"model": "m", "messages": m()}), &[]);
    assert_eq!((plain.provider_tools, plain.model_reads()), (0, Some(1)));
}
