//! The Responses API end to end: the official OpenAI Python SDK (`responses.create`,
//! `responses.stream`, `responses.retrieve`) through the built component against recording
//! upstreams: one that serves the API (passed through, `store: false`, ids sealed, a follow-up
//! sent back to it with its own id) and a chat-only engine (translated both ways).

mod support;

use support::clients::{self, python};
use support::mock::SseEnd;
use support::{Meridian, Mock, Script};

fn hash(k: &str) -> String {
    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(k.as_bytes()))
}

const KEY: &str = "sk-app-e2e-responses-000001";
const OTHER: &str = "sk-other-e2e-responses-0002";

/// `native` (serves the Responses API) and `chatty` (a chat-only engine), tenants `app` and
/// `other`, and `extra`.
fn responses_policy(native: &Mock, chatty: &Mock, extra: &str) -> String {
    format!(
        "version = 1\n\
         [[providers]]\nid = \"native\"\nbase_url = \"{}/v1\"\nlocation = \"DE\"\nresponses = true\nmodels = {{ \"native-model\" = \"upstream-native\" }}\n\
         [[providers]]\nid = \"chatty\"\nbase_url = \"{}/v1\"\nlocation = \"DE\"\nmodels = {{ \"chat-model\" = \"upstream-chat\" }}\n\
         [[tenants]]\nid = \"app\"\nkeys = [\"sha256:{}\"]\n\
         [[tenants]]\nid = \"other\"\nkeys = [\"sha256:{}\"]\n{extra}",
        native.url(),
        chatty.url(),
        hash(KEY),
        hash(OTHER)
    )
}

/// A provider that serves the Responses API, answering as OpenAI's reference shows.
fn native(req: &support::Recorded, n: usize) -> Script {
    let object = |id: &str, text: &str| {
        serde_json::json!({
            "id": id, "object": "response", "created_at": 1741476542, "status": "completed",
            "model": "upstream-native", "parallel_tool_calls": true, "tool_choice": "auto", "tools": [],
            "store": false,
            "output": [{"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
                        "content": [{"type": "output_text", "text": text, "annotations": []}]}],
            "usage": {"input_tokens": 5, "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens": 3, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 8}
        })
    };
    if req.method == "GET" {
        let id = req.path.rsplit('/').next().unwrap_or("");
        return Script::Json {
            status: 200,
            body: object(id, "native turn 1").to_string(),
            headers: vec![],
        };
    }
    if req.body["stream"] == true {
        let id = format!("resp_native_{n}");
        let mut done = object(&id, "native stream");
        let created = serde_json::json!({"type": "response.created", "sequence_number": 0,
            "response": {"id": id, "object": "response", "created_at": 1741476542, "status": "in_progress",
                         "model": "upstream-native", "output": [], "parallel_tool_calls": true,
                         "tool_choice": "auto", "tools": []}});
        let added = serde_json::json!({"type": "response.output_item.added", "sequence_number": 1, "output_index": 0,
            "item": {"type": "message", "id": "msg_1", "status": "in_progress", "role": "assistant", "content": []}});
        let part = serde_json::json!({"type": "response.content_part.added", "sequence_number": 2, "item_id": "msg_1",
            "output_index": 0, "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}});
        let delta = serde_json::json!({"type": "response.output_text.delta", "sequence_number": 3, "item_id": "msg_1",
            "output_index": 0, "content_index": 0, "delta": "native stream", "logprobs": []});
        let text_done = serde_json::json!({"type": "response.output_text.done", "sequence_number": 4, "item_id": "msg_1",
            "output_index": 0, "content_index": 0, "text": "native stream", "logprobs": []});
        let item_done = serde_json::json!({"type": "response.output_item.done", "sequence_number": 5, "output_index": 0,
            "item": done["output"][0].clone()});
        done["status"] = "completed".into();
        let completed = serde_json::json!({"type": "response.completed", "sequence_number": 6, "response": done});
        return Script::Sse {
            events: [created, added, part, delta, text_done, item_done, completed]
                .iter()
                .map(|e| e.to_string())
                .collect(),
            gap_ms: 0,
            end: SseEnd::Done,
        };
    }
    Script::Json {
        status: 200,
        body: object(&format!("resp_native_{n}"), &format!("native turn {n}")).to_string(),
        headers: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_sdk_creates_streams_and_follows_up_through_meridian() {
    let native_mock = Mock::with(native).await;
    let chatty = Mock::with(|req: &support::Recorded, _| {
        if req.body["stream"] == true {
            Script::stream(&["Hel", "lo"])
        } else {
            Script::ok("translated")
        }
    })
    .await;
    let policy = responses_policy(&native_mock, &chatty, "");
    let m = Meridian::with_policy(
        &policy,
        &[(
            "SPIN_VARIABLE_RESPONSE_ID_KEY",
            "e2e-sealing-key-0123456789abcdef",
        )],
    )
    .await;
    clients::run(
        &python(),
        "responses_sdk.py",
        &[("MERIDIAN_URL", m.url.as_str()), ("MERIDIAN_KEY", KEY)],
    )
    .await;

    // Another tenant holding app's id: as if it did not exist, for a follow-up and a fetch.
    let client = reqwest::Client::new();
    let first: serde_json::Value = client
        .post(format!("{}/v1/responses", m.url))
        .bearer_auth(KEY)
        .json(&serde_json::json!({"model": "native-model", "input": "mine"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = first["id"].as_str().unwrap().to_string();
    let sent_before = native_mock.requests().len();
    let follow = client
        .post(format!("{}/v1/responses", m.url))
        .bearer_auth(OTHER)
        .json(&serde_json::json!({"model": "native-model", "input": "theirs", "previous_response_id": id}))
        .send()
        .await
        .unwrap();
    assert_eq!(follow.status(), 404);
    let fetch = client
        .get(format!("{}/v1/responses/{id}", m.url))
        .bearer_auth(OTHER)
        .send()
        .await
        .unwrap();
    assert_eq!(fetch.status(), 404);
    assert_eq!(
        native_mock.requests().len(),
        sent_before,
        "neither reached the provider"
    );

    // What the provider that serves the API got: its own paths and ids, never `store: true`.
    let got: Vec<_> = native_mock.requests()[..sent_before - 1].to_vec();
    let posts: Vec<_> = got.iter().filter(|r| r.method == "POST").collect();
    assert_eq!(posts.len(), 3, "two turns and a stream: {got:?}");
    for r in &posts {
        assert_eq!(r.path, "/v1/responses");
        assert_eq!(r.body["model"], "upstream-native");
        assert_eq!(r.body["store"], false);
        assert!(
            r.header("authorization").is_none(),
            "no client credentials upstream"
        );
    }
    assert_eq!(posts[0].body["instructions"], "Be brief.");
    assert_eq!(posts[1].body["previous_response_id"], "resp_native_0");
    let gets: Vec<_> = got.iter().filter(|r| r.method == "GET").collect();
    assert_eq!(gets.len(), 1);
    assert_eq!(gets[0].path, "/v1/responses/resp_native_1");

    // The chat-only engine got chat.
    let chat = chatty.requests();
    assert_eq!(chat.len(), 2);
    for r in &chat {
        assert_eq!(r.path, "/v1/chat/completions");
        assert_eq!(r.body["model"], "upstream-chat");
        assert_eq!(r.body["messages"][0]["role"], "user");
    }
    assert_eq!(chat[1].body["stream"], true);
}

/// The city the conversation's last user message asks about.
fn city(text: &str) -> &'static str {
    if text.contains("Bergen") {
        "Bergen"
    } else {
        "Oslo"
    }
}

/// Every user text of a request body, in any of the three protocols, joined.
fn user_texts(v: &serde_json::Value) -> String {
    let mut out = String::new();
    fn walk(v: &serde_json::Value, out: &mut String) {
        match v {
            serde_json::Value::String(s) => out.push_str(s),
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            serde_json::Value::Object(o) => o.values().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    for key in ["input", "messages"] {
        if let Some(items) = v[key].as_array() {
            // The last user message decides which city is asked about.
            if let Some(last) = items.iter().rev().find(|i| i["role"] == "user") {
                walk(&last["content"], &mut out);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_sdk_runs_a_tool_agent_through_a_native_a_chat_and_an_anthropic_provider() {
    // Each upstream asks for the tool until the conversation carries its output, then answers.
    let native = Mock::with(|req: &support::Recorded, n| {
        let input = req.body["input"].as_array().cloned().unwrap_or_default();
        let answered = input.last().is_some_and(|i| i["type"] == "function_call_output");
        let c = city(&user_texts(&req.body));
        let output = if answered {
            serde_json::json!([{"type": "message", "id": format!("msg_{n}"), "status": "completed", "role": "assistant",
                "content": [{"type": "output_text", "text": format!("It is sunny in {c}."), "annotations": []}]}])
        } else {
            serde_json::json!([{"type": "function_call", "id": format!("fc_{n}"), "call_id": format!("call_{n}"),
                "name": "get_weather", "arguments": format!("{{\"city\":\"{c}\"}}"), "status": "completed"}])
        };
        Script::Json {
            status: 200,
            body: serde_json::json!({"id": format!("resp_{n}"), "object": "response", "created_at": 1, "status": "completed",
                "model": "upstream-native", "output": output, "parallel_tool_calls": true, "tool_choice": "auto", "tools": [],
                "usage": {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15,
                          "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}})
            .to_string(),
            headers: vec![],
        }
    })
    .await;
    let chatty = Mock::with(|req: &support::Recorded, n| {
        let msgs = req.body["messages"].as_array().cloned().unwrap_or_default();
        let answered = msgs.last().is_some_and(|m| m["role"] == "tool");
        let c = city(&user_texts(&req.body));
        let message = if answered {
            serde_json::json!({"role": "assistant", "content": format!("It is sunny in {c}.")})
        } else {
            serde_json::json!({"role": "assistant", "content": null, "tool_calls": [{"id": format!("call_{n}"), "type": "function",
                "function": {"name": "get_weather", "arguments": format!("{{\"city\":\"{c}\"}}")}}]})
        };
        Script::Json {
            status: 200,
            body: serde_json::json!({"id": format!("c{n}"), "object": "chat.completion", "created": 1, "model": "m",
                "choices": [{"index": 0, "message": message, "finish_reason": if answered { "stop" } else { "tool_calls" }}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}})
            .to_string(),
            headers: vec![],
        }
    })
    .await;
    let claude = Mock::with(|req: &support::Recorded, n| {
        let msgs = req.body["messages"].as_array().cloned().unwrap_or_default();
        let answered = msgs.last().is_some_and(|m| {
            m["content"]
                .as_array()
                .is_some_and(|b| b.iter().any(|x| x["type"] == "tool_result"))
        });
        let c = city(&user_texts(&req.body));
        let content = if answered {
            serde_json::json!([{"type": "text", "text": format!("It is sunny in {c}.")}])
        } else {
            serde_json::json!([{"type": "tool_use", "id": format!("toolu_{n}"), "name": "get_weather", "input": {"city": c}}])
        };
        Script::Json {
            status: 200,
            body: serde_json::json!({"id": format!("msg_{n}"), "type": "message", "role": "assistant", "model": "claude-x",
                "content": content, "stop_reason": if answered { "end_turn" } else { "tool_use" }, "stop_sequence": null,
                "usage": {"input_tokens": 10, "output_tokens": 5}})
            .to_string(),
            headers: vec![],
        }
    })
    .await;
    let policy = format!(
        "version = 1\n\
         [[providers]]\nid = \"native\"\nbase_url = \"{}/v1\"\nlocation = \"DE\"\nresponses = true\nmodels = {{ \"native-model\" = \"upstream-native\" }}\n\
         [[providers]]\nid = \"chatty\"\nbase_url = \"{}/v1\"\nlocation = \"DE\"\nmodels = {{ \"chat-model\" = \"upstream-chat\" }}\n\
         [[providers]]\nid = \"claude\"\nkind = \"anthropic\"\nbase_url = \"{}/v1\"\nlocation = \"US\"\nmodels = {{ \"claude-model\" = \"claude-x\" }}\n\
         [[tenants]]\nid = \"app\"\nkeys = [\"sha256:{}\"]\n",
        native.url(),
        chatty.url(),
        claude.url(),
        hash(KEY)
    );
    let m = Meridian::with_policy(&policy, &[]).await;
    clients::run(
        &python(),
        "agents_sdk.py",
        &[
            ("MERIDIAN_URL", m.url.as_str()),
            ("MERIDIAN_KEY", KEY),
            ("MERIDIAN_MODELS", "native-model,chat-model,claude-model"),
        ],
    )
    .await;
    // Two runs of two model calls each, on every upstream; the second run's conversation
    // carried the first run's tool call and its output in each protocol.
    assert_eq!(native.requests().len(), 4);
    assert_eq!(chatty.requests().len(), 4);
    assert_eq!(claude.requests().len(), 4);
    let last_native = &native.requests()[2].body["input"];
    assert!(last_native
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["type"] == "function_call_output" && i["output"] == "sunny in Oslo"));
    let chat = &chatty.requests()[2].body["messages"];
    assert!(chat
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["role"] == "tool" && m["content"] == "sunny in Oslo"));
    for r in native.requests() {
        assert_eq!(
            r.body["store"], false,
            "the API's default is to store: never sent"
        );
    }
}

/// The error codes docs/http-api.md documents for ids ("Ids and follow-ups"), each checked
/// against the running component: the table is read from the doc, and every cell is asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_codes_of_the_id_operations_are_what_the_component_answers() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/http-api.md")).unwrap();
    let at = doc.find("| the id is |").expect("the table of id errors");
    let rows: Vec<Vec<String>> = doc[at..]
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect();
    assert_eq!(rows.len(), 5, "{rows:?}");
    let parse = |cell: &str| -> (u16, String) {
        let (status, code) = cell.split_once(' ').unwrap();
        (status.parse().unwrap(), code.trim_matches('`').to_string())
    };

    let native_mock = Mock::with(native).await;
    let chatty = Mock::start(Script::ok("translated")).await;
    let policy = |extra: &str| responses_policy(&native_mock, &chatty, extra);
    let sealing = [(
        "SPIN_VARIABLE_RESPONSE_ID_KEY",
        "e2e-sealing-key-0123456789abcdef",
    )];
    let m = Meridian::with_policy(&policy(""), &sealing).await;
    // The same key, a policy that no longer lets `app` reach `native`.
    let denied = Meridian::with_policy(
        &policy("[[rules]]\nid = \"no-native\"\nwhen = { tenant = [\"app\"] }\nrequire = { deny = [\"native\"] }\n"),
        &sealing,
    )
    .await;
    let keyless = Meridian::with_policy(&policy(""), &[]).await;
    let client = reqwest::Client::new();
    let create = |model: &str| {
        let (client, url, model) = (client.clone(), m.url.clone(), model.to_string());
        async move {
            let v: serde_json::Value = client
                .post(format!("{url}/v1/responses"))
                .bearer_auth(KEY)
                .json(&serde_json::json!({"model": model, "input": "hi"}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["id"].as_str().unwrap().to_string()
        }
    };
    let kept = create("native-model").await;
    let translated = create("chat-model").await;
    assert!(
        kept.starts_with("resp_mrd1~") && translated.starts_with("resp_mrd_"),
        "{kept} {translated}"
    );
    let mut forged = kept.clone();
    forged.pop();
    forged.push(if kept.ends_with('a') { 'b' } else { 'a' });

    for row in &rows {
        let (label, follow, ops) = (&row[0], parse(&row[1]), parse(&row[2]));
        let (node, id, key) = match label.as_str() {
            l if l.starts_with("altered") => (&m, &forged, KEY),
            l if l.starts_with("another tenant") => (&m, &kept, OTHER),
            l if l.starts_with("one the policy no longer allows") => (&denied, &kept, KEY),
            l if l.starts_with("made from chat") => (&m, &translated, KEY),
            l if l.starts_with("any, without") => (&keyless, &kept, KEY),
            other => panic!("a row the test does not know: {other}"),
        };
        let got = |r: reqwest::Response| async move {
            let status = r.status().as_u16();
            let v: serde_json::Value = r.json().await.unwrap();
            (
                status,
                v["error"]["code"].as_str().unwrap_or("").to_string(),
            )
        };
        let f = client
            .post(format!("{}/v1/responses", node.url))
            .bearer_auth(key)
            .json(&serde_json::json!({"model": "native-model", "input": "again", "previous_response_id": id}))
            .send()
            .await
            .unwrap();
        assert_eq!(got(f).await, follow, "{label}: previous_response_id");
        for (method, path) in [
            ("GET", format!("/v1/responses/{id}")),
            ("DELETE", format!("/v1/responses/{id}")),
            ("GET", format!("/v1/responses/{id}/input_items")),
        ] {
            let r = client
                .request(method.parse().unwrap(), format!("{}{path}", node.url))
                .bearer_auth(key)
                .send()
                .await
                .unwrap();
            assert_eq!(got(r).await, ops, "{label}: {method} {path}");
        }
    }
}
