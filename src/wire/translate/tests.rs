//! Translations checked against fixtures shaped as the OpenAI and Anthropic API references show
//! them: requests, whole answers, and streams split at every byte.

use serde_json::{json, Map, Value};

use super::chat_from_messages::{response, StreamTranslator};
use super::messages_from_chat::request;

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

/// An event that is a JSON array is no Anthropic event: the translator's fast path for text
/// deltas reads it as its tree does (nothing), not as a delta read field by field.
#[test]
fn an_event_that_is_an_array_is_not_translated_as_a_delta() {
    let start = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\",\"usage\":{}}}\n\n";
    for data in [
        "[\"content_block_delta\",0,{\"type\":\"text_delta\",\"text\":\"leak\"}]",
        "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":[\"text_delta\",\"leak\"]}",
    ] {
        let s = format!("{start}event: content_block_delta\ndata: {data}\n\n");
        let out = StreamTranslator::new(1, false).feed(s.as_bytes());
        let c = chunks(&out);
        assert_eq!(c.len(), 1, "{data}: {}", String::from_utf8_lossy(&out));
        assert!(!String::from_utf8_lossy(&out).contains("leak"), "{data}");
    }
    // The same delta as an object is translated.
    let s = format!("{start}event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"ok\"}}}}\n\n");
    let c = chunks(&StreamTranslator::new(1, false).feed(s.as_bytes()));
    assert_eq!(c[1]["choices"][0]["delta"], json!({"content": "ok"}));
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

mod messages_in {
    use proptest::prelude::*;
    use serde_json::{json, Value};

    use super::obj;
    use crate::wire::anthropic::error_body;
    use crate::wire::translate::{chat_from_messages, messages_from_chat};

    #[test]
    fn a_messages_request_becomes_an_openai_chat_request() {
        let body = obj(json!({
            "model": "claude-public",
            "max_tokens": 300,
            "system": [{"type": "text", "text": "Be brief."}],
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4A=="}}
                ]},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "x"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "a cat"}]}]}
            ],
            "stop_sequences": ["END"],
            "temperature": 0.2,
            "stream": true,
            "tools": [{"name": "lookup", "description": "Look up", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "metadata": {"user_id": "u-9"}
        }));
        assert_eq!(
            chat_from_messages::request(&body, "gpt-4o").unwrap(),
            json!({
                "model": "gpt-4o",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": [
                        {"type": "text", "text": "What is this?"},
                        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4A=="}}
                    ]},
                    {"role": "assistant", "content": null, "tool_calls": [{"id": "toolu_1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"x\"}"}}]},
                    {"role": "tool", "tool_call_id": "toolu_1", "content": "a cat"}
                ],
                "max_tokens": 300,
                "temperature": 0.2,
                "stop": ["END"],
                "stream": true,
                "stream_options": {"include_usage": true},
                "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}, "description": "Look up"}}],
                "tool_choice": "required",
                "parallel_tool_calls": false,
                "user": "u-9"
            })
        );
        let thinking = obj(
            json!({"model": "m", "max_tokens": 5, "messages": [], "thinking": {"type": "enabled", "budget_tokens": 1024}}),
        );
        assert_eq!(
            chat_from_messages::request(&thinking, "m"),
            Err("`thinking`".into())
        );
    }

    #[test]
    fn an_openai_answer_becomes_a_message_and_errors_take_anthropics_shape() {
        let chat = json!({"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi",
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
                "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14, "prompt_tokens_details": {"cached_tokens": 6}}});
        assert_eq!(
            messages_from_chat::response(&chat),
            json!({"id": "chatcmpl-1", "type": "message", "role": "assistant", "model": "gpt-4o",
                "content": [{"type": "text", "text": "Hi"}, {"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": 1}}],
                "stop_reason": "tool_use", "stop_sequence": null,
                "usage": {"input_tokens": 4, "cache_read_input_tokens": 6, "output_tokens": 4}})
        );
        let e: Value = serde_json::from_slice(&error_body(529, "busy", None)).unwrap();
        assert_eq!(
            e,
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}})
        );
    }

    fn openai_chunks() -> String {
        let c = |delta: Value, finish: Value| {
            format!(
                "data: {}\n\n",
                json!({"id": "chatcmpl-9", "object": "chat.completion.chunk", "model": "gpt-4o", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            )
        };
        let mut s = c(json!({"role": "assistant", "content": ""}), Value::Null);
        s += &c(json!({"content": "Hel"}), Value::Null);
        s += &c(json!({"content": "lo"}), Value::Null);
        s += &c(
            json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}]}),
            Value::Null,
        );
        s += &c(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\":"}}]}),
            Value::Null,
        );
        s += &c(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
            Value::Null,
        );
        s += &c(json!({}), json!("tool_calls"));
        s += &format!(
            "data: {}\n\n",
            json!({"id": "chatcmpl-9", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}})
        );
        s += "data: [DONE]\n\n";
        s
    }

    fn events(bytes: &[u8]) -> Vec<(String, Value)> {
        String::from_utf8_lossy(bytes)
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let (name, data) = e.split_once('\n').unwrap();
                (
                    name.strip_prefix("event: ").unwrap().to_string(),
                    serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn openai_chunks_become_anthropic_events_whole_lines_at_a_time() {
        let s = openai_chunks();
        let out = messages_from_chat::StreamTranslator::new().feed(s.as_bytes());
        let names: Vec<String> = events(&out).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        let ev = events(&out);
        assert_eq!(
            ev[2].1["delta"],
            json!({"type": "text_delta", "text": "Hel"})
        );
        assert_eq!(
            ev[5].1["content_block"],
            json!({"type": "tool_use", "id": "call_1", "name": "f", "input": {}})
        );
        assert_eq!(
            ev[7].1["delta"],
            json!({"type": "input_json_delta", "partial_json": "1}"})
        );
        assert_eq!(
            ev[9].1,
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 7}})
        );
        // Fed line by line (as the stream guard passes them on) it is the same.
        let mut m = messages_from_chat::StreamTranslator::new();
        let mut piecewise = Vec::new();
        for line in s.split_inclusive('\n') {
            piecewise.extend(m.feed(line.as_bytes()));
        }
        assert_eq!(piecewise, out);
        // An error event ends the message without message_stop.
        let mut m = messages_from_chat::StreamTranslator::new();
        let mut o = m.feed(
            b"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}\n\n",
        );
        o.extend(m.feed(b"event: error\ndata: {\"error\":{\"message\":\"The stream from `p` broke\",\"code\":\"upstream_stream_broken\"}}\n\n"));
        let ev = events(&o);
        assert_eq!(ev.last().unwrap().0, "error");
        assert_eq!(ev.last().unwrap().1["error"]["type"], "api_error");
        assert!(!ev.iter().any(|(n, _)| n == "message_stop"));
    }

    /// OpenAI chat requests made only of what both wires can express.
    fn request() -> impl Strategy<Value = Value> {
        let text = "[a-zA-Z ,.!?]{1,30}";
        let turn = prop_oneof![
            text.prop_map(|t| json!({"role": "user", "content": t})),
            text.prop_map(|t| json!({"role": "assistant", "content": t})),
            ("[a-z]{1,8}", "[a-z0-9]{1,6}", text).prop_map(|(name, id, result)| {
                json!([
                    {"role": "assistant", "content": null, "tool_calls": [{"id": format!("call_{id}"), "type": "function", "function": {"name": name, "arguments": "{\"q\":1}"}}]},
                    {"role": "tool", "tool_call_id": format!("call_{id}"), "content": result}
                ])
            }),
        ];
        (
            proptest::option::of(text),
            prop::collection::vec(turn, 1..5),
            1u64..4000,
            proptest::option::of(0.0f64..1.0),
            proptest::option::of(prop::collection::vec("[A-Z]{1,5}", 1..3)),
            proptest::option::of(("[a-z]{1,8}", prop::sample::select(vec!["auto", "required", "none"]))),
            proptest::option::of("[a-z0-9-]{1,10}"),
        )
            .prop_map(|(system, turns, max_tokens, temperature, stop, tool, user)| {
                let mut messages = Vec::new();
                if let Some(s) = system {
                    messages.push(json!({"role": "system", "content": s}));
                }
                for t in turns {
                    match t {
                        Value::Array(pair) => messages.extend(pair),
                        one => messages.push(one),
                    }
                }
                let mut r = json!({"model": "m", "messages": messages, "max_tokens": max_tokens});
                if let Some(t) = temperature {
                    r["temperature"] = json!(t);
                }
                if let Some(s) = stop {
                    r["stop"] = json!(s);
                }
                if let Some((name, choice)) = tool {
                    r["tools"] = json!([{"type": "function", "function": {"name": name, "description": "d", "parameters": {"type": "object"}}}]);
                    r["tool_choice"] = json!(choice);
                }
                if let Some(u) = user {
                    r["user"] = json!(u);
                }
                r
            })
    }

    /// The oracle, written apart from the translators: what an OpenAI request means once
    /// consecutive turns of one role are joined (Anthropic's messages alternate), as a list of
    /// (role, text pieces, tool calls, tool results).
    fn meaning(r: &Value) -> Value {
        let mut turns: Vec<Value> = Vec::new();
        let mut system = Vec::new();
        for m in r["messages"].as_array().unwrap() {
            let role = m["role"].as_str().unwrap();
            if role == "system" {
                system.push(m["content"].clone());
                continue;
            }
            let (role, item) = match role {
                "tool" => (
                    "user",
                    json!({"result": m["tool_call_id"], "text": m["content"]}),
                ),
                _ => {
                    let calls: Vec<Value> = m["tool_calls"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|c| json!({"call": c["id"], "name": c["function"]["name"], "args": serde_json::from_str::<Value>(c["function"]["arguments"].as_str().unwrap()).unwrap()}))
                        .collect();
                    (role, json!({"text": m["content"], "calls": calls}))
                }
            };
            match turns.last_mut() {
                Some(t) if t["role"] == role => t["items"].as_array_mut().unwrap().push(item),
                _ => turns.push(json!({"role": role, "items": [item]})),
            }
        }
        // Joined turns become one message on the way back: compare the pieces in order.
        let flat: Vec<Value> = turns
            .iter()
            .map(|t| {
                let mut texts = Vec::new();
                let mut calls = Vec::new();
                let mut results = Vec::new();
                for i in t["items"].as_array().unwrap() {
                    if let Some(r) = i.get("result") {
                        results.push(json!([r, i["text"]]));
                    } else {
                        // Content is a string or a list of text parts.
                        match &i["text"] {
                            Value::String(s) => texts.push(s.clone()),
                            Value::Array(parts) => texts.extend(
                                parts
                                    .iter()
                                    .filter_map(|p| p["text"].as_str().map(str::to_string)),
                            ),
                            _ => {}
                        }
                        calls.extend(i["calls"].as_array().unwrap().iter().cloned());
                    }
                }
                json!({"role": t["role"], "texts": texts, "calls": calls, "results": results})
            })
            .collect();
        json!({
            "system": system, "turns": flat, "max_tokens": r["max_tokens"], "temperature": r["temperature"],
            "stop": r["stop"], "tools": r["tools"], "tool_choice": r["tool_choice"], "user": r["user"],
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(500)
        ))]

        /// OpenAI → Anthropic → OpenAI keeps every field both wires can express.
        #[test]
        fn openai_to_anthropic_and_back_keeps_what_both_express(r in request()) {
            let there = messages_from_chat::request(&obj(r.clone()), "claude", 4096).unwrap();
            let back = chat_from_messages::request(&obj(there), "m").unwrap();
            let mut back_meaning = meaning(&back);
            let want = meaning(&r);
            // Several system messages come back as one, joined by a blank line.
            let joined: Vec<String> = want["system"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect();
            back_meaning["system"] = json!(back_meaning["system"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect::<Vec<_>>());
            prop_assert_eq!(&back_meaning["system"], &json!(if joined.is_empty() { vec![] } else { vec![joined.join("\n\n")] }));
            for k in ["turns", "max_tokens", "temperature", "stop", "tools", "tool_choice", "user"] {
                prop_assert_eq!(&back_meaning[k], &want[k], "{}", k);
            }
        }
    }
}

/// Every type of part, block and item a client may send (the same enums the one reading uses)
/// either translates into the other wire or is refused with its path: none is dropped. The
/// oracle is the list below, of what each translation can carry, written from the two API
/// references.
#[test]
fn every_kind_translates_or_is_refused_by_its_path() {
    use crate::request::kinds::{Block, ChatPart, Item, Part};
    // Chat → Messages: a user message with one part of each kind.
    for kind in ChatPart::ALL {
        let part = match kind {
            ChatPart::ImageUrl => {
                json!({"type": "image_url", "image_url": {"url": "https://x.test/a.png"}})
            }
            other => json!({"type": other.name(), "text": "hi"}),
        };
        let body = obj(json!({"model": "m", "messages": [{"role": "user", "content": [part]}]}));
        let out = request(&body, "m", 100);
        match kind.name() {
            "text" | "image_url" => assert!(out.is_ok(), "{kind:?}: {out:?}"),
            name => assert_eq!(
                out,
                Err(format!("`messages[0].content[0].type` `{name}`")),
                "{kind:?}"
            ),
        }
    }
    // Messages → chat: a user (and an assistant) turn with one block of each kind, and a tool
    // result holding one block of each kind.
    for kind in Block::ALL {
        let block = match kind {
            Block::Image => {
                json!({"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}})
            }
            Block::ToolResult => {
                json!({"type": "tool_result", "tool_use_id": "t1", "content": "ok"})
            }
            Block::ToolUse => json!({"type": "tool_use", "id": "t1", "name": "f", "input": {}}),
            other => json!({"type": other.name(), "text": "hi"}),
        };
        let role = if *kind == Block::ToolUse {
            "assistant"
        } else {
            "user"
        };
        let body = obj(
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": role, "content": [block.clone()]}]}),
        );
        let out = super::chat_from_messages::request(&body, "m");
        match kind.name() {
            "text" | "image" | "tool_use" | "tool_result" => {
                assert!(out.is_ok(), "{kind:?}: {out:?}")
            }
            name => assert_eq!(
                out,
                Err(format!("`messages[0].content[0].type` `{name}`")),
                "{kind:?}"
            ),
        }
        let inner = json!({"type": "tool_result", "tool_use_id": "t1", "content": [block]});
        let body = obj(
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [inner]}]}),
        );
        let out = super::chat_from_messages::request(&body, "m");
        match kind.name() {
            "text" => assert!(out.is_ok(), "{kind:?}: {out:?}"),
            _ => assert_eq!(
                out,
                Err("`messages[0].content[0].content[0]`".to_string()),
                "{kind:?}"
            ),
        }
    }
    // Responses → chat: an item of each kind, and a user message with a part of each kind.
    for kind in Item::ALL {
        let item = match kind {
            Item::Message => json!({"type": "message", "role": "user", "content": "hi"}),
            Item::FunctionCall => {
                json!({"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"})
            }
            Item::FunctionCallOutput => {
                json!({"type": "function_call_output", "call_id": "c", "output": "ok"})
            }
            other => json!({"type": other.name(), "id": "x"}),
        };
        let body = obj(json!({"model": "m", "input": [item]}));
        let out = super::chat_from_responses::request(&body, "m");
        match kind.name() {
            "message" | "function_call" | "function_call_output" => {
                assert!(out.is_ok(), "{kind:?}: {out:?}")
            }
            name => assert_eq!(
                out,
                Err(format!("`input[0]` (a `{name}` item)")),
                "{kind:?}"
            ),
        }
    }
    for kind in Part::ALL {
        let part = match kind {
            Part::InputImage => json!({"type": "input_image", "image_url": "https://x.test/a.png"}),
            Part::InputAudio => {
                json!({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}})
            }
            Part::Refusal => json!({"type": "refusal", "refusal": "no"}),
            other => json!({"type": other.name(), "text": "hi", "file_id": "file-1"}),
        };
        let body =
            obj(json!({"model": "m", "input": [{"role": "user", "content": [part.clone()]}]}));
        let out = super::chat_from_responses::request(&body, "m");
        match kind.name() {
            "input_file" => assert_eq!(out, Err("`input[0].content[0]`".to_string())),
            _ => assert!(out.is_ok(), "{kind:?}: {out:?}"),
        }
        let body = obj(
            json!({"model": "m", "input": [{"type": "function_call_output", "call_id": "c", "output": [part]}]}),
        );
        let out = super::chat_from_responses::request(&body, "m");
        match kind.name() {
            "input_text" | "output_text" => assert!(out.is_ok(), "{kind:?}: {out:?}"),
            _ => assert_eq!(out, Err("`input[0].output[0]`".to_string()), "{kind:?}"),
        }
    }
}
