//! End to end: the providers' own wires through the built component in the real runtime, against
//! mock Anthropic and Azure OpenAI upstreams that record exactly what they receive.

mod support;

use futures::StreamExt;
use serde_json::{json, Value};
use support::clients::{self, python};
use support::mock::SseEnd;
use support::{policy_for, Meridian, Mock, Recorded, Script};

const KEY: &str = "sk-operator-key-0001";

fn json_answer(status: u16, body: Value) -> Script {
    Script::Json {
        status,
        body: body.to_string(),
        headers: vec![],
    }
}

/// Answers as Anthropic's Messages API does: text, a tool call when tools are offered, or a
/// stream of events.
fn anthropic_like(rec: &Recorded, _: usize) -> Script {
    if rec.body["stream"] == true {
        let mut events = vec![
            json!({"type": "message_start", "message": {"id": "msg_s", "type": "message", "role": "assistant", "content": [], "model": "claude-x", "usage": {"input_tokens": 3, "output_tokens": 1}}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "ping"}),
        ];
        for piece in ["Hello", " from", " a Claude", " stream"] {
            events.push(json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}));
        }
        events.push(json!({"type": "content_block_stop", "index": 0}));
        events.push(json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 6}}));
        events.push(json!({"type": "message_stop"}));
        return Script::Sse {
            // Named, as Anthropic's API writes them.
            events: events
                .iter()
                .map(|e| format!("event: {}\ndata: {e}", e["type"].as_str().unwrap_or("")))
                .collect(),
            gap_ms: 5,
            end: SseEnd::Done,
        };
    }
    if rec.body.get("tools").is_some() {
        return json_answer(
            200,
            json!({
                "id": "msg_t", "type": "message", "role": "assistant", "model": "claude-x",
                "content": [{"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}],
                "stop_reason": "tool_use", "usage": {"input_tokens": 20, "output_tokens": 9}
            }),
        );
    }
    json_answer(
        200,
        json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
            "content": [{"type": "text", "text": "Hello from Claude"}],
            "stop_reason": "end_turn", "usage": {"input_tokens": 12, "output_tokens": 4}
        }),
    )
}

#[tokio::test]
async fn the_openai_sdks_talk_to_an_anthropic_provider_through_meridian() {
    let claude = Mock::with(anthropic_like).await;
    let policy = policy_for(
        &[(
            "claude",
            &claude,
            "DE",
            "kind = \"anthropic\"\nkey_secret = \"openai_api_key\"",
        )],
        "",
    )
    .replace("allow_anonymous = true", "allow_anonymous = \"paid\"");
    let m = Meridian::with_policy(&policy, &[("SPIN_VARIABLE_OPENAI_API_KEY", KEY)]).await;
    clients::run(
        &python(),
        "openai_to_anthropic.py",
        &[("MERIDIAN_URL", &m.url)],
    )
    .await;
    // And the openai npm package: chat, a stream with usage, a refused field.
    clients::run(
        "node",
        "openai_to_anthropic.mjs",
        &[("MERIDIAN_URL", &m.url)],
    )
    .await;

    // The exact wire Anthropic received (the Python run's three requests first).
    let seen = claude.requests();
    assert_eq!(seen.len(), 5, "the unsupported fields never left Meridian");
    for r in &seen {
        assert_eq!(r.path, "/v1/messages");
        assert_eq!(r.header("x-api-key"), Some(KEY));
        assert_eq!(r.header("anthropic-version"), Some("2023-06-01"));
        assert_eq!(r.header("authorization"), None);
        assert_eq!(r.body["model"], "claude-upstream-model");
        assert_eq!(
            r.body["max_tokens"], 4096,
            "the provider's default when the client gives none"
        );
    }
    assert_eq!(seen[0].body["system"], "Be brief.");
    assert_eq!(
        seen[0].body["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "Say hello"}]}])
    );
    assert_eq!(seen[1].body["stream"], true);
    assert_eq!(
        seen[2].body["tools"],
        json!([{"name": "weather", "description": "Weather in a city", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}])
    );
    assert_eq!(seen[2].body["tool_choice"], json!({"type": "auto"}));
}

#[tokio::test]
async fn azure_deployments_and_fallback_across_wires() {
    let azure = Mock::with(|rec, _| {
        if rec.body["stream"] == true {
            return Script::stream(&["from", " azure"]);
        }
        Script::ok("from azure")
    })
    .await;
    // Anthropic overloaded for non-stream requests; for streams it fails after the first event.
    let claude = Mock::with(|rec, _| {
        if rec.body["stream"] == true {
            Script::Sse {
                events: vec![
                    json!({"type": "message_start", "message": {"id": "m", "model": "c", "usage": {}}}).to_string(),
                    json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}}).to_string(),
                    json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}).to_string(),
                ],
                gap_ms: 5,
                end: SseEnd::Cut,
            }
        } else {
            json_answer(529, json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}))
        }
    })
    .await;
    let policy = policy_for(
        &[
            ("claude", &claude, "DE", "kind = \"anthropic\"\nkey_secret = \"openai_api_key\""),
            ("azure", &azure, "SE", "kind = \"azure\"\nkey_secret = \"openai_api_key\"\napi_version = \"2025-01-01-preview\""),
        ],
        "[[rules]]\nid = \"claude-first\"\nprefer = { order = [\"claude\", \"azure\"] }\n",
    )
    .replace("allow_anonymous = true", "allow_anonymous = \"paid\"");
    let m = Meridian::with_policy(&policy, &[("SPIN_VARIABLE_OPENAI_API_KEY", KEY)]).await;
    let c = reqwest::Client::new();
    let chat = |stream: bool| json!({"model": "chat-model", "stream": stream, "messages": [{"role": "user", "content": "hi"}]});

    // 529 from Anthropic: Azure serves, the client sees one OpenAI answer.
    let r = c
        .post(m.at("/v1/chat/completions"))
        .json(&chat(false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-meridian-provider"], "azure");
    assert_eq!(r.headers()["x-meridian-failures"], "claude=status 529");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "from azure");
    let seen = azure.requests().pop().unwrap();
    assert_eq!(
        seen.path,
        "/v1/openai/deployments/azure-upstream-model/chat/completions"
    );
    assert_eq!(seen.query, "api-version=2025-01-01-preview");
    assert_eq!(seen.header("api-key"), Some(KEY));
    assert_eq!(seen.header("authorization"), None);

    // Anthropic fails after the first byte: the stream ends with an OpenAI error event, no
    // [DONE], and nothing from Azure is mixed in.
    let r = c
        .post(m.at("/v1/chat/completions"))
        .json(&chat(true))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-meridian-provider"], "claude");
    let mut body = Vec::new();
    let mut s = r.bytes_stream();
    while let Some(chunk) = s.next().await {
        body.extend_from_slice(&chunk.unwrap());
    }
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains("\"content\":\"Hel\""), "{text}");
    assert!(text.contains("event: error"), "{text}");
    assert!(!text.contains("[DONE]"), "{text}");
    assert_eq!(
        azure.requests().len(),
        1,
        "no fallback after the first byte"
    );
}

/// Answers as an OpenAI-compatible engine does, for the Anthropic SDK run.
fn openai_like(rec: &Recorded, _: usize) -> Script {
    let prompt = rec.body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_string();
    if rec.body["stream"] == true {
        return Script::Sse {
            events: ["Hello", " from", " a", " stream"]
                .iter()
                .map(|w| support::mock::chunk(w))
                .collect(),
            gap_ms: 5,
            end: if prompt == "fail midway" {
                SseEnd::Cut
            } else {
                SseEnd::Done
            },
        };
    }
    if rec.body.get("tools").is_some() {
        return json_answer(
            200,
            json!({
                "id": "c1", "object": "chat.completion", "model": "m",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": null,
                    "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                    "finish_reason": "tool_calls"}],
                "usage": {"prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29}
            }),
        );
    }
    json_answer(
        200,
        json!({
            "id": "c2", "object": "chat.completion", "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16}
        }),
    )
}

/// Answers as Anthropic does, for the Anthropic SDK run (passed through by Meridian).
fn anthropic_native(rec: &Recorded, n: usize) -> Script {
    let last = rec.body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .map(|m| m["content"].clone())
        .unwrap_or_default();
    if rec.body["stream"] == true {
        let Script::Sse {
            mut events, gap_ms, ..
        } = anthropic_like(rec, n)
        else {
            unreachable!()
        };
        // The same stream with "Hello from a stream" as its text.
        for e in events.iter_mut() {
            *e = e.replace(" a Claude", " a");
        }
        if last == "fail midway" {
            events.truncate(4);
            return Script::Sse {
                events,
                gap_ms,
                end: SseEnd::Cut,
            };
        }
        return Script::Sse {
            events,
            gap_ms,
            end: SseEnd::Done,
        };
    }
    if rec.body.get("tools").is_some() {
        return anthropic_like(rec, n);
    }
    json_answer(
        200,
        json!({
            "id": "msg_n", "type": "message", "role": "assistant", "model": "claude-x",
            "content": [{"type": "text", "text": "Hello there"}],
            "stop_reason": "end_turn", "stop_sequence": null, "usage": {"input_tokens": 12, "output_tokens": 4}
        }),
    )
}

#[tokio::test]
async fn the_anthropic_sdk_talks_to_both_wires_through_meridian() {
    let claude = Mock::with(anthropic_native).await;
    let alpha = Mock::with(openai_like).await;
    let policy = policy_for(
        &[
            (
                "claude",
                &claude,
                "DE",
                "kind = \"anthropic\"\nkey_secret = \"openai_api_key\"",
            ),
            ("alpha", &alpha, "DE", ""),
        ],
        "",
    )
    .replace("allow_anonymous = true", "allow_anonymous = \"paid\"");
    let m = Meridian::with_policy(&policy, &[("SPIN_VARIABLE_OPENAI_API_KEY", KEY)]).await;
    for (only, wire) in [("claude", "anthropic"), ("alpha", "openai")] {
        let env = [
            ("MERIDIAN_URL", m.url.as_str()),
            ("MERIDIAN_ONLY", only),
            ("MERIDIAN_WIRE", wire),
        ];
        clients::run(&python(), "anthropic_sdk_test.py", &env).await;
    }
    // Anthropic received the SDK's requests as sent (model rewritten, operator's key); the
    // OpenAI engine received chat requests.
    let seen = claude.requests();
    assert_eq!(seen.len(), 4);
    for r in &seen {
        assert_eq!(r.path, "/v1/messages");
        assert_eq!(r.header("x-api-key"), Some(KEY));
        assert!(r.header("anthropic-version").is_some());
        assert_eq!(r.body["model"], "claude-upstream-model");
        assert!(
            r.body.get("provider").is_none(),
            "Meridian's own field is removed"
        );
    }
    assert_eq!(seen[0].body["system"], "Be brief.");
    for r in alpha.requests() {
        assert_eq!(r.path, "/v1/chat/completions");
        assert_eq!(r.body["model"], "alpha-upstream-model");
    }
}
