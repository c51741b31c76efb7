//! The providers' wires: Anthropic and Azure for OpenAI clients, and Anthropic clients on both wires.

use super::*;

/// `claude` (Anthropic, EU, key `claude_key`), `azure-eu` (Azure OpenAI, key `azure_key`) and
/// `alpha` (OpenAI wire), all serving `chat-model`, tried in that order.
fn wires_policy() -> Policy {
    wires_policy_with("")
}

/// The same, with `settings` added to its `[settings]`.
fn wires_policy_with(settings: &str) -> Policy {
    let text = "version = 1\n[settings]\nallow_anonymous = \"paid\"\n".to_string()
        + settings
        + "\
        [[providers]]\nid = \"claude\"\nkind = \"anthropic\"\nbase_url = \"https://claude/v1\"\nkey_secret = \"claude_key\"\nlocation = \"eu\"\nmax_tokens = 1000\nmodels = { \"chat-model\" = \"claude-sonnet-4-5\" }\n\
        [[providers]]\nid = \"azure-eu\"\nkind = \"azure\"\nbase_url = \"https://azure\"\nkey_secret = \"azure_key\"\napi_version = \"2024-10-21\"\nlocation = \"SE\"\nmodels = { \"chat-model\" = \"gpt4o-prod\" }\n\
        [[providers]]\nid = \"alpha\"\nbase_url = \"http://alpha/v1\"\nlocation = \"DE\"\nmodels = { \"chat-model\" = \"a-m\" }\n\
        [[rules]]\nid = \"order\"\nprefer = { order = [\"claude\", \"azure-eu\", \"alpha\"] }\n";
    policy::load(&text, "wires").unwrap_or_else(|e| panic!("{e}"))
}

/// A request through `serve` on the wires policy, with the providers' keys set.
async fn wires_serve(t: &Fake, path: &str, headers: &[(&str, &str)], body: String) -> Answer {
    wires_serve_under(&wires_policy(), t, path, headers, body).await
}

async fn wires_serve_under(
    p: &Policy,
    t: &Fake,
    path: &str,
    headers: &[(&str, &str)],
    body: String,
) -> Answer {
    let secret = |name: &str| match name {
        "claude_key" => Some("sk-ant-operator".to_string()),
        "azure_key" => Some("azure-operator-key".to_string()),
        _ => None,
    };
    call_with(Ok(p), &secret, t, "POST", path, headers, &body).await
}

async fn wires_call(t: &Fake, body: &str) -> Answer {
    let h = [JSON, ("authorization", "Bearer sk-client")];
    wires_serve(t, "/v1/chat/completions", &h, body.to_string()).await
}

#[tokio::test(start_paused = true)]
async fn anthropic_providers_get_their_own_wire_and_answer_in_openai_shape() {
    let msg = include_str!("fixtures/anthropic-message-bonjour.json");
    let t = Fake::new(vec![("claude", vec![answer(200, msg)])]);
    let a = wires_call(&t, r#"{"model":"chat-model","messages":[{"role":"system","content":"Be kind."},{"role":"user","content":"Hi"}]}"#).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let sent = t.requests.borrow()[0].clone();
    assert_eq!(sent.url, "https://claude/v1/messages");
    let h = |k: &str| sent.header(k);
    assert_eq!(h("x-api-key"), Some("sk-ant-operator"));
    assert_eq!(h("anthropic-version"), Some("2023-06-01"));
    assert_eq!(h("authorization"), None, "no client credential, no bearer");
    let b: serde_json::Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(
        b,
        serde_json::json!({"model": "claude-sonnet-4-5", "system": "Be kind.", "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}], "max_tokens": 1000})
    );
    let v = a.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], "Bonjour");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["total_tokens"], 12);
    assert_eq!(a.header("x-meridian-provider"), Some("claude"));

    // A stream, translated as it arrives, ends with [DONE] after message_stop.
    let events = [
        r#"{"type":"message_start","message":{"id":"msg_2","model":"claude-sonnet-4-5","usage":{"input_tokens":4,"output_tokens":1}}}"#,
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hel"}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"lo"}}"#,
        r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":2}}"#,
        r#"{"type":"message_stop"}"#,
    ];
    let sse_text: String = events
        .iter()
        .map(|e| format!("event: x\ndata: {e}\n\n"))
        .collect();
    let (a1, a2) = sse_text.split_at(sse_text.len() / 3);
    let t = Fake::new(vec![("claude", vec![sse(&[(0, a1), (2, a2)])])]);
    let a = wires_call(&t, r#"{"model":"chat-model","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Hi"}]}"#).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let text = a.text();
    let mut content = String::new();
    let mut usage = serde_json::Value::Null;
    for d in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if d == "[DONE]" {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(d).unwrap();
        assert_eq!(v["object"], "chat.completion.chunk");
        content.push_str(v["choices"][0]["delta"]["content"].as_str().unwrap_or(""));
        if !v["usage"].is_null() {
            usage = v["usage"].clone();
        }
    }
    assert_eq!(content, "Hello");
    assert_eq!(usage["completion_tokens"], 2);
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert_eq!(a.record.stream_outcome, Some("done"));
    assert_eq!(a.record.usage.map(|u| u.total_tokens), Some(6));
}

#[tokio::test(start_paused = true)]
async fn an_overloaded_anthropic_provider_falls_back_across_wires() {
    // 529 before the first byte: the next candidate, Azure, serves; the client sees one answer.
    let t = Fake::new(vec![
        (
            "claude",
            vec![answer(
                529,
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            )],
        ),
        (
            "azure",
            vec![answer(
                200,
                r#"{"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"from azure"},"finish_reason":"stop"}]}"#,
            )],
        ),
    ]);
    let a = wires_call(
        &t,
        r#"{"model":"chat-model","messages":[{"role":"user","content":"Hi"}]}"#,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["choices"][0]["message"]["content"], "from azure");
    assert_eq!(a.header("x-meridian-failures"), Some("claude=status 529"));
    let sent = t.requests.borrow()[1].clone();
    assert_eq!(
        sent.url,
        "https://azure/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21"
    );
    let h = |k: &str| sent.header(k);
    assert_eq!(h("api-key"), Some("azure-operator-key"));
    assert_eq!(h("authorization"), None);

    // A stream whose first Anthropic event is an error falls back too.
    let err = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
    let ok =
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"az\"}}]}\n\ndata: [DONE]\n\n";
    let t = Fake::new(vec![
        ("claude", vec![sse(&[(0, err)])]),
        ("azure", vec![sse(&[(0, ok)])]),
    ]);
    let a = wires_call(
        &t,
        r#"{"model":"chat-model","stream":true,"messages":[{"role":"user","content":"Hi"}]}"#,
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("x-meridian-provider"), Some("azure-eu"));
    assert!(a.text().contains("\"az\""), "{}", a.text());
}

#[tokio::test(start_paused = true)]
async fn a_field_anthropic_cannot_take_is_a_400_when_no_provider_can() {
    // `logprobs`: Anthropic cannot; Azure and alpha can, so they serve.
    let t = Fake::new(vec![("azure", vec![ok_json(0)])]);
    let a = wires_call(
        &t,
        r#"{"model":"chat-model","logprobs":true,"messages":[{"role":"user","content":"Hi"}]}"#,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(
        a.header("x-meridian-failures"),
        Some("claude=cannot take `logprobs`")
    );
    // Only Anthropic allowed: a 400 naming the field.
    let t = no_script();
    let a = wires_call(&t, r#"{"model":"chat-model","logprobs":true,"provider":{"only":["claude"]},"messages":[{"role":"user","content":"Hi"}]}"#).await;
    assert_eq!(a.status, 400, "{}", a.text());
    assert_eq!(a.code(), "unsupported_parameter");
    assert!(
        a.text().contains("`claude` cannot take `logprobs`"),
        "{}",
        a.text()
    );
    assert!(t.sent_to().is_empty());
}

async fn messages_call(t: &Fake, body: &str, only: &str) -> Answer {
    messages_call_under(&wires_policy(), t, body, only).await
}

async fn messages_call_under(p: &Policy, t: &Fake, body: &str, only: &str) -> Answer {
    let body =
        body.trim_end_matches('}').to_string() + &format!(r#","provider":{{"only":["{only}"]}}}}"#);
    let h = [
        JSON,
        ("x-api-key", "sk-client"),
        ("anthropic-version", "2023-06-01"),
        ("anthropic-beta", "prompt-caching-2024-07-31"),
    ];
    wires_serve_under(p, t, "/v1/messages", &h, body).await
}

/// Anthropic event names in a stream, in order.
fn event_names(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn anthropic_clients_are_served_by_anthropic_and_openai_wire_providers() {
    let req = r#"{"model":"chat-model","max_tokens":50,"system":"Be kind.","messages":[{"role":"user","content":"Hi"}]}"#;
    // To an Anthropic provider: passed through, model rewritten, key and versions set.
    let msg = include_str!("fixtures/anthropic-message-thinking.json");
    let t = Fake::new(vec![("claude", vec![answer(200, msg)])]);
    let a = messages_call(&t, req, "claude").await;
    assert_eq!(a.status, 200, "{}", a.text());
    let sent = t.requests.borrow()[0].clone();
    assert_eq!(sent.url, "https://claude/v1/messages");
    let h = |k: &str| sent.header(k);
    assert_eq!(h("x-api-key"), Some("sk-ant-operator"));
    assert_eq!(h("anthropic-beta"), Some("prompt-caching-2024-07-31"));
    let b: serde_json::Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(
        b,
        serde_json::json!({"model": "claude-sonnet-4-5", "max_tokens": 50, "system": "Be kind.", "messages": [{"role": "user", "content": "Hi"}]})
    );
    assert_eq!(
        a.json()["content"][0]["type"],
        "thinking",
        "passed through whole"
    );
    assert_eq!(a.record.usage.map(|u| u.total_tokens), Some(12));

    // To an OpenAI-wire provider: translated both ways.
    let t = Fake::new(vec![(
        "alpha",
        vec![answer(
            200,
            include_str!("fixtures/chat-completion-hallo.json"),
        )],
    )]);
    let a = messages_call(&t, req, "alpha").await;
    assert_eq!(a.status, 200, "{}", a.text());
    let sent: serde_json::Value = serde_json::from_slice(&t.requests.borrow()[0].body).unwrap();
    assert_eq!(
        t.requests.borrow()[0].url,
        "http://alpha/v1/chat/completions"
    );
    assert_eq!(
        sent["messages"],
        serde_json::json!([{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}])
    );
    let v = a.json();
    assert_eq!(v["type"], "message");
    assert_eq!(
        v["content"],
        serde_json::json!([{"type": "text", "text": "Hallo"}])
    );
    assert_eq!(v["stop_reason"], "max_tokens");
    assert_eq!(v["usage"]["output_tokens"], 2);

    // A stream from an OpenAI-wire provider reaches the Anthropic client as Anthropic events.
    let ok = include_str!("fixtures/chat-stream-hallo.sse");
    let t = Fake::new(vec![("alpha", vec![sse(&[(0, ok)])])]);
    let stream_req = req.replace("\"max_tokens\":50", "\"max_tokens\":50,\"stream\":true");
    let a = messages_call(&t, &stream_req, "alpha").await;
    assert_eq!(a.status, 200, "{}", a.text());
    let sent: serde_json::Value = serde_json::from_slice(&t.requests.borrow()[0].body).unwrap();
    assert_eq!(
        sent["stream_options"],
        serde_json::json!({"include_usage": true})
    );
    assert_eq!(
        event_names(&a.text()),
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );

    // And from an Anthropic provider, failing after the first byte: Anthropic's error event,
    // no message_stop.
    let events = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\",\"usage\":{\"input_tokens\":1}}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hel\"}}\n\n";
    let t = Fake::new(vec![(
        "claude",
        vec![Step::Answer {
            after_ms: 0,
            status: 200,
            headers: vec![("content-type".into(), "text/event-stream".into())],
            chunks: vec![
                (0, Ok(events.as_bytes().to_vec())),
                (1, Err(Failure::Transport("reset".into()))),
            ],
        }],
    )]);
    let a = messages_call(&t, &stream_req, "claude").await;
    let text = a.text();
    let names = event_names(&text);
    assert_eq!(names.last(), Some(&"error"), "{text}");
    assert!(!names.contains(&"message_stop"), "{text}");
    assert!(text.contains("\"text\":\"Hel\""), "{text}");
}

#[tokio::test(start_paused = true)]
async fn anthropic_clients_get_errors_in_anthropics_shape() {
    // Unknown model: 404 not_found_error.
    let t = no_script();
    let a = messages_call(
        &t,
        r#"{"model":"nope","max_tokens":5,"messages":[{"role":"user","content":"x"}]}"#,
        "alpha",
    )
    .await;
    assert_eq!(a.status, 404);
    assert_eq!(a.json()["type"], "error");
    assert_eq!(a.json()["error"]["type"], "not_found_error");
    // A field no OpenAI-wire provider can take: 400 invalid_request_error naming it.
    let a = messages_call(&t, r#"{"model":"chat-model","max_tokens":5,"thinking":{"type":"enabled","budget_tokens":1024},"messages":[{"role":"user","content":"x"}]}"#, "alpha").await;
    assert_eq!(a.status, 400, "{}", a.text());
    assert_eq!(a.json()["error"]["type"], "invalid_request_error");
    assert!(a.text().contains("`thinking`"), "{}", a.text());
    // Token counting is refused clearly.
    let p = wires_policy();
    let a = call(&p, &t, "POST", "/v1/messages/count_tokens", &[JSON], "{}").await;
    assert_eq!(a.status, 404);
    assert_eq!(a.json()["error"]["type"], "not_found_error");
    assert!(a.text().contains("does not count tokens"), "{}", a.text());
}

#[tokio::test(start_paused = true)]
async fn an_anthropic_client_falls_back_from_anthropic_to_an_openai_engine_in_one_stream() {
    // The Anthropic provider is overloaded before the first byte; the OpenAI-wire engine serves,
    // and the client reads one coherent Anthropic stream.
    let ok = include_str!("fixtures/chat-stream-from-the-engine.sse");
    let t = Fake::new(vec![
        (
            "claude",
            vec![answer(
                529,
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            )],
        ),
        ("alpha", vec![sse(&[(0, ok)])]),
    ]);
    let req = r#"{"model":"chat-model","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"Hi"}]}"#;
    let a = messages_call(&t, req, r#"claude","alpha"#).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(t.sent_to(), ["claude", "alpha"]);
    assert_eq!(a.header("x-meridian-provider"), Some("alpha"));
    let text = a.text();
    assert_eq!(
        event_names(&text),
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ],
        "{text}"
    );
    assert!(text.contains("\"text\":\"from the engine\""), "{text}");
    // The Anthropic provider got the request as the client sent it; the engine got chat.
    assert_eq!(t.requests.borrow()[0].url, "https://claude/v1/messages");
    assert_eq!(
        t.requests.borrow()[1].url,
        "http://alpha/v1/chat/completions"
    );
}

#[tokio::test(start_paused = true)]
async fn an_anthropic_stream_for_an_anthropic_client_passes_through_as_it_came() {
    let upstream = include_str!("fixtures/anthropic-stream-thinking.sse");
    let (a1, a2) = upstream.split_at(97);
    let t = Fake::new(vec![("claude", vec![sse(&[(0, a1), (2, a2)])])]);
    let req = r#"{"model":"chat-model","max_tokens":50,"stream":true,"thinking":{"type":"enabled","budget_tokens":1024},"messages":[{"role":"user","content":"Hi"}]}"#;
    let a = messages_call(&t, req, "claude").await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.text(), upstream, "byte for byte");
    let sent: serde_json::Value = serde_json::from_slice(&t.requests.borrow()[0].body).unwrap();
    assert_eq!(
        sent["thinking"]["budget_tokens"], 1024,
        "the client's own fields go along"
    );
    assert_eq!(a.record.stream_outcome, Some("done"));
    let u = a.record.usage.unwrap();
    assert_eq!(
        (u.prompt_tokens, u.cached_tokens, u.completion_tokens),
        (10, 3, 12)
    );
}

/// `stream_events = "framed"` covers an Anthropic stream passed through as it came: after the
/// first event, a delta whose data has an object's outline but is not JSON goes on unparsed;
/// usage and the end are read as before. Checked, the same delta ends the stream with
/// Anthropic's error event. An Anthropic client served over chat reads every event either way
/// (`streams::framed_stream_events_leave_only_outlined_plain_events_unparsed`).
#[tokio::test(start_paused = true)]
async fn framed_stream_events_pass_an_anthropic_stream_s_outlined_delta_unparsed() {
    let upstream = include_str!("fixtures/anthropic-stream-thinking.sse");
    let good = r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Let me think"}}"#;
    let bad = r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Let me think"]}"#;
    assert!(upstream.contains(good));
    assert!(serde_json::from_str::<serde_json::Value>(bad).is_err());
    let garbled = upstream.replace(good, bad);
    let req = r#"{"model":"chat-model","max_tokens":50,"stream":true,"thinking":{"type":"enabled","budget_tokens":1024},"messages":[{"role":"user","content":"Hi"}]}"#;
    let framed = wires_policy_with("stream_events = \"framed\"\n");
    assert_eq!(framed.settings.stream_events, policy::StreamEvents::Framed);
    // The first event in a chunk of its own: the attempt loop checks what the first read holds.
    let first = garbled.find("\n\n").unwrap() + 2;
    let (head, rest) = garbled.split_at(first);
    let t = Fake::new(vec![("claude", vec![sse(&[(0, head), (1, rest)])])]);
    let a = messages_call_under(&framed, &t, req, "claude").await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.text(), garbled, "byte for byte");
    assert_eq!(a.record.stream_outcome, Some("done"));
    let u = a.record.usage.expect("usage is read");
    assert_eq!((u.prompt_tokens, u.completion_tokens), (10, 12));
    let t = Fake::new(vec![("claude", vec![sse(&[(0, head), (1, rest)])])]);
    let a = messages_call(&t, req, "claude").await;
    assert_eq!(a.record.stream_outcome, Some("upstream_stream_malformed"));
    assert!(a.text().contains("event: error"), "{}", a.text());
    assert!(!a.text().contains("message_stop"), "{}", a.text());
}

#[tokio::test(start_paused = true)]
async fn the_last_event_is_ended_even_when_its_blank_line_comes_later() {
    // `data: [DONE]\n` and its blank line in separate chunks: Meridian stops reading at [DONE]
    // and ends the event itself, so clients dispatch it.
    let t = Fake::new(vec![(
        "alpha",
        vec![sse(&[(0, EV1), (1, "data: [DONE]\n"), (1, "\n")])],
    )]);
    let a = chat(&load(""), &t, &ACME_DE, &chat_body(r#","stream":true"#)).await;
    assert!(a.text().ends_with("data: [DONE]\n\n"), "{:?}", a.text());
    let t = Fake::new(vec![("alpha", vec![sse(&[(0, EV1), (1, DONE)])])]);
    let a = chat(&load(""), &t, &ACME_DE, &chat_body(r#","stream":true"#)).await;
    assert!(
        a.text().ends_with("data: [DONE]\n\n") && !a.text().ends_with("\n\n\n"),
        "{:?}",
        a.text()
    );
}
