//! Translations checked against fixtures shaped as the OpenAI and Anthropic API references show
//! them: requests, whole answers, and streams split at every byte.

use serde_json::{json, Map, Value};

use super::anthropic::{request, response, StreamTranslator};

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

#[test]
fn an_openai_chat_request_becomes_a_messages_request() {
    let body = obj(json!({
        "model": "claude",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in English."}]},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in these?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}
            ]},
            {"role": "assistant", "content": "Let me look that up.", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"cat\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "a cat"},
            {"role": "user", "content": "Thanks."}
        ],
        "temperature": 0.5,
        "top_p": 0.9,
        "stop": ["\n\nHuman:"],
        "stream": true,
        "stream_options": {"include_usage": true},
        "tools": [{"type": "function", "function": {"name": "lookup", "description": "Look up", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}],
        "tool_choice": "required",
        "parallel_tool_calls": false,
        "user": "u-1",
        "n": 1
    }));
    let got = request(&body, "claude-sonnet-4-5", 4096).unwrap();
    assert_eq!(
        got,
        json!({
            "model": "claude-sonnet-4-5",
            "system": "Be brief.\n\nAnswer in English.",
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "What is in these?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}
                ]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Let me look that up."},
                    {"type": "tool_use", "id": "call_1", "name": "lookup", "input": {"q": "cat"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "a cat"},
                    {"type": "text", "text": "Thanks."}
                ]}
            ],
            "max_tokens": 4096,
            "temperature": 0.5,
            "top_p": 0.9,
            "stream": true,
            "stop_sequences": ["\n\nHuman:"],
            "tools": [{"name": "lookup", "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}, "description": "Look up"}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "metadata": {"user_id": "u-1"}
        })
    );
    // The client's own max_tokens wins over the provider's default; a string stop is a list.
    let b = obj(
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 7, "stop": "END", "tool_choice": {"type": "function", "function": {"name": "f"}}}),
    );
    let got = request(&b, "m", 4096).unwrap();
    assert_eq!(got["max_tokens"], 7);
    assert_eq!(got["stop_sequences"], json!(["END"]));
    assert_eq!(got["tool_choice"], json!({"type": "tool", "name": "f"}));
}

#[test]
fn what_anthropic_cannot_express_is_named_never_dropped() {
    let base = || json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    for (field, value, named) in [
        ("logprobs", json!(true), "`logprobs`"),
        ("n", json!(2), "`n`"),
        ("seed", json!(7), "`seed`"),
        ("presence_penalty", json!(0.5), "`presence_penalty`"),
        (
            "response_format",
            json!({"type": "json_object"}),
            "`response_format`",
        ),
        ("logit_bias", json!({"50256": -100}), "`logit_bias`"),
    ] {
        let mut b = base();
        b[field] = value;
        assert_eq!(request(&obj(b), "m", 10), Err(named.to_string()), "{field}");
    }
    // Defaults are no request for anything.
    let mut b = base();
    b["n"] = json!(1);
    b["presence_penalty"] = json!(0.0);
    b["logprobs"] = json!(false);
    b["response_format"] = json!({"type": "text"});
    assert!(request(&obj(b), "m", 10).is_ok());
    let audio = json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]});
    assert_eq!(
        request(&obj(audio), "m", 10),
        Err("`messages[0].content[0].type` `input_audio`".into())
    );
    let legacy =
        json!({"model": "m", "messages": [{"role": "function", "name": "f", "content": "x"}]});
    assert_eq!(
        request(&obj(legacy), "m", 10),
        Err("`messages[0].role` `function`".into())
    );
}

#[test]
fn a_messages_answer_becomes_a_chat_completion() {
    let answer = json!({
        "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [
            {"type": "text", "text": "Looking it up."},
            {"type": "tool_use", "id": "toolu_01", "name": "lookup", "input": {"q": "cat"}}
        ],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 10, "cache_creation_input_tokens": 5, "cache_read_input_tokens": 20, "output_tokens": 7}
    });
    assert_eq!(
        response(&answer, 1700000000),
        json!({
            "id": "msg_01", "object": "chat.completion", "created": 1700000000, "model": "claude-sonnet-4-5",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Looking it up.",
                "tool_calls": [{"id": "toolu_01", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"cat\"}"}}]},
                "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 35, "completion_tokens": 7, "total_tokens": 42, "prompt_tokens_details": {"cached_tokens": 20, "cache_write_tokens": 5}}
        })
    );
    for (stop, finish) in [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("refusal", "content_filter"),
    ] {
        let a = json!({"id": "m", "model": "c", "content": [{"type": "text", "text": "x"}], "stop_reason": stop, "usage": {}});
        assert_eq!(
            response(&a, 0)["choices"][0]["finish_reason"],
            finish,
            "{stop}"
        );
    }
}

/// A stream as the Messages streaming reference shows one: text, then a tool call.
const STREAM: &str = "event: message_start\n\
data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":25,\"cache_read_input_tokens\":5,\"output_tokens\":1}}}\n\n\
event: content_block_start\n\
data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: ping\n\
data: {\"type\": \"ping\"}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" world\"}}\n\n\
event: content_block_stop\n\
data: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
event: content_block_start\n\
data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"lookup\",\"input\":{}}}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"q\\\": \"}}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"cat\\\"}\"}}\n\n\
event: content_block_stop\n\
data: {\"type\":\"content_block_stop\",\"index\":1}\n\n\
event: message_delta\n\
data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\n\n\
event: message_stop\n\
data: {\"type\":\"message_stop\"}\n\n";

fn chunks(sse: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(sse)
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(|d| {
            if d == "[DONE]" {
                json!("[DONE]")
            } else {
                serde_json::from_str(d).unwrap()
            }
        })
        .collect()
}

#[test]
fn a_messages_stream_becomes_chat_completion_chunks() {
    let mut t = StreamTranslator::new(1700000000, true);
    let out = t.feed(STREAM.as_bytes());
    let c = chunks(&out);
    let head = json!({"id": "msg_1", "object": "chat.completion.chunk", "created": 1700000000, "model": "claude-sonnet-4-5"});
    let with = |choices: Value| {
        let mut v = head.clone();
        v["choices"] = choices;
        v
    };
    let delta = |d: Value, f: Value| with(json!([{"index": 0, "delta": d, "finish_reason": f}]));
    assert_eq!(
        c,
        vec![
            delta(json!({"role": "assistant", "content": ""}), Value::Null),
            delta(json!({"content": "Hello"}), Value::Null),
            delta(json!({"content": " world"}), Value::Null),
            delta(
                json!({"tool_calls": [{"index": 0, "id": "toolu_1", "type": "function", "function": {"name": "lookup", "arguments": ""}}]}),
                Value::Null
            ),
            delta(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"q\": "}}]}),
                Value::Null
            ),
            delta(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"cat\"}"}}]}),
                Value::Null
            ),
            delta(json!({}), json!("tool_calls")),
            {
                let mut u = with(json!([]));
                u["usage"] = json!({"prompt_tokens": 30, "completion_tokens": 15, "total_tokens": 45, "prompt_tokens_details": {"cached_tokens": 5}});
                u
            },
            json!("[DONE]"),
        ]
    );
    // Without include_usage there is no usage chunk.
    let mut t = StreamTranslator::new(1700000000, false);
    let c = chunks(&t.feed(STREAM.as_bytes()));
    assert_eq!(c.len(), 8);
    assert_eq!(c[7], json!("[DONE]"));
}

#[test]
fn a_stream_split_at_every_byte_translates_the_same() {
    let whole = StreamTranslator::new(1, true).feed(STREAM.as_bytes());
    let b = STREAM.as_bytes();
    for cut in 0..=b.len() {
        let mut t = StreamTranslator::new(1, true);
        let mut out = t.feed(&b[..cut]);
        out.extend(t.feed(&b[cut..]));
        assert_eq!(out, whole, "cut at {cut}");
    }
    // And one byte at a time, with CRLF line ends.
    let crlf = STREAM.replace('\n', "\r\n");
    let mut t = StreamTranslator::new(1, true);
    let mut out = Vec::new();
    for byte in crlf.as_bytes() {
        out.extend(t.feed(std::slice::from_ref(byte)));
    }
    assert_eq!(out, whole);
}

#[test]
fn an_error_event_becomes_an_openai_error_event_and_no_clean_end() {
    let s = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\",\"usage\":{}}}\n\n\
event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
    let c = chunks(&StreamTranslator::new(1, false).feed(s.as_bytes()));
    assert_eq!(c.len(), 2);
    assert_eq!(
        c[1],
        json!({"error": {"message": "Overloaded", "type": "overloaded_error", "code": null}})
    );
    assert!(!c.contains(&json!("[DONE]")));
}
