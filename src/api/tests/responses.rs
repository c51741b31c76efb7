//! `POST /v1/responses` through `serve`: passed through to a provider that serves the API
//! (with `store: false` unless retention is granted), translated to chat for one that does not,
//! whole and streamed (split at every byte), with function tools, and what cannot be translated
//! named. The answers the fakes give are shaped as OpenAI's API reference shows them.

use super::*;

/// `chatty` speaks chat only (DE, 1.0 / 2.0); `native` serves the Responses API itself (DE,
/// same prices); `keeper` serves it and is granted retention.
fn policy(providers: &[&str]) -> Policy {
    let mut text = String::from("version = 1\n[settings]\nallow_anonymous = true\n");
    for p in providers {
        let extra = match *p {
            "native" => "responses = true\n",
            "keeper" => "responses = true\ncapabilities = [\"store\", \"remote_media\"]\n",
            _ => "",
        };
        text.push_str(&format!(
            "[[providers]]\nid = \"{p}\"\nbase_url = \"http://{p}/v1\"\nlocation = \"DE\"\n{extra}models = {{ \"chat-model\" = {{ id = \"{p}-m\", input_price = 1.0, output_price = 2.0 }} }}\n"
        ));
    }
    policy::load(&text, "responses").unwrap_or_else(|e| panic!("{e}"))
}

async fn create(p: &Policy, t: &Fake, body: &str) -> Answer {
    call(p, t, "POST", "/v1/responses", &[JSON], body).await
}

fn sent(t: &Fake, i: usize) -> (String, serde_json::Value) {
    let r = &t.requests.borrow()[i];
    (r.url.clone(), serde_json::from_slice(&r.body).unwrap())
}

const CHAT_ANSWER: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"chatty-m","choices":[{"index":0,"message":{"role":"assistant","content":"Paris."},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}"#;

#[tokio::test(start_paused = true)]
async fn a_chat_only_provider_gets_chat_and_the_client_a_response_object() {
    let p = policy(&["chatty"]);
    let t = Fake::new(vec![("chatty", vec![answer(200, CHAT_ANSWER)])]);
    let a = create(
        &p,
        &t,
        r#"{"model":"chat-model","instructions":"Be brief.","input":"Capital of France?","max_output_tokens":50,"temperature":0.2}"#,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let (url, body) = sent(&t, 0);
    assert_eq!(url, "http://chatty/v1/chat/completions");
    assert_eq!(
        body,
        serde_json::json!({
            "model": "chatty-m",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Capital of France?"}
            ],
            "max_tokens": 50,
            "temperature": 0.2
        })
    );
    let r = a.json();
    assert_eq!(r["object"], "response");
    assert_eq!(r["status"], "completed");
    assert_eq!(r["model"], "chat-model");
    assert_eq!(r["store"], false);
    assert!(r["id"].as_str().unwrap().starts_with("resp_mrd_"));
    assert_eq!(r["output"][0]["type"], "message");
    assert_eq!(r["output"][0]["content"][0]["type"], "output_text");
    assert_eq!(r["output"][0]["content"][0]["text"], "Paris.");
    assert_eq!(r["usage"]["input_tokens"], 12);
    assert_eq!(r["usage"]["output_tokens"], 3);
    assert_eq!(r["usage"]["total_tokens"], 15);
    // 12 × 1.0 + 3 × 2.0 per million.
    assert_eq!(a.header("x-meridian-cost-usd"), Some("0.00001800"));
    assert_eq!(a.header("x-meridian-provider"), Some("chatty"));
}

#[tokio::test(start_paused = true)]
async fn function_tools_calls_and_outputs_cross_in_both_directions() {
    let p = policy(&["chatty"]);
    let call_answer = r#"{"id":"c2","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_9","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Oslo\"}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":30,"completion_tokens":9,"total_tokens":39}}"#;
    let t = Fake::new(vec![("chatty", vec![answer(200, call_answer)])]);
    let body = r#"{"model":"chat-model",
        "input":[
          {"role":"user","content":[{"type":"input_text","text":"Weather in Bergen, then Oslo?"}]},
          {"type":"function_call","call_id":"call_1","name":"get_weather","arguments":"{\"city\":\"Bergen\"}"},
          {"type":"function_call_output","call_id":"call_1","output":"rain, 9 C"}
        ],
        "tools":[{"type":"function","name":"get_weather","description":"Weather now","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]},"strict":true}],
        "tool_choice":"auto"}"#;
    let a = create(&p, &t, body).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let (_, sent) = sent(&t, 0);
    assert_eq!(
        sent["messages"],
        serde_json::json!([
            {"role": "user", "content": [{"type": "text", "text": "Weather in Bergen, then Oslo?"}]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Bergen\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "rain, 9 C"}
        ])
    );
    assert_eq!(
        sent["tools"][0],
        serde_json::json!({"type": "function", "function": {"name": "get_weather", "description": "Weather now",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}, "strict": true}})
    );
    assert_eq!(sent["tool_choice"], "auto");
    let r = a.json();
    assert_eq!(r["output"].as_array().unwrap().len(), 1);
    let item = &r["output"][0];
    assert_eq!(item["type"], "function_call");
    assert_eq!(item["call_id"], "call_9");
    assert_eq!(item["name"], "get_weather");
    assert_eq!(item["arguments"], "{\"city\":\"Oslo\"}");
}

#[tokio::test(start_paused = true)]
async fn structured_output_and_reasoning_effort_map_to_chat() {
    let p = policy(&["chatty"]);
    let t = Fake::new(vec![("chatty", vec![answer(200, CHAT_ANSWER)])]);
    let a = create(
        &p,
        &t,
        r#"{"model":"chat-model","input":"x","reasoning":{"effort":"low"},
            "text":{"format":{"type":"json_schema","name":"city","schema":{"type":"object","properties":{"name":{"type":"string"}}},"strict":true}}}"#,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let (_, sent) = sent(&t, 0);
    assert_eq!(sent["reasoning_effort"], "low");
    assert_eq!(
        sent["response_format"],
        serde_json::json!({"type": "json_schema", "json_schema": {"name": "city",
            "schema": {"type": "object", "properties": {"name": {"type": "string"}}}, "strict": true}})
    );
}

/// A chat stream as an engine sends it: text in two deltas, then usage, then `[DONE]`.
const CHAT_STREAM: &str = concat!(
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Par\"}}]}\n\n",
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"is.\"},\"finish_reason\":\"stop\"}]}\n\n",
    "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7}}\n\n",
    "data: [DONE]\n\n"
);

/// The events' types and data, in order.
fn events(text: &str) -> Vec<(String, serde_json::Value)> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let mut kind = String::new();
            let mut data = serde_json::Value::Null;
            for line in e.lines() {
                if let Some(k) = line.strip_prefix("event: ") {
                    kind = k.to_string();
                }
                if let Some(d) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(d).unwrap_or_else(|_| panic!("{d}"));
                }
            }
            (kind, data)
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_translated_stream_is_the_responses_events_split_at_every_byte() {
    let p = policy(&["chatty"]);
    let bytes: Vec<(u64, Result<Vec<u8>, Failure>)> =
        CHAT_STREAM.bytes().map(|b| (0, Ok(vec![b]))).collect();
    let t = Fake::new(vec![(
        "chatty",
        vec![Step::Answer {
            after_ms: 0,
            status: 200,
            headers: vec![("content-type".into(), "text/event-stream".into())],
            chunks: bytes,
        }],
    )]);
    let a = create(
        &p,
        &t,
        r#"{"model":"chat-model","input":"Capital?","stream":true}"#,
    )
    .await;
    assert_eq!(a.status, 200);
    let (_, sent) = sent(&t, 0);
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["stream_options"]["include_usage"], true);
    let ev = events(&a.text());
    let kinds: Vec<&str> = ev.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    for (i, (k, d)) in ev.iter().enumerate() {
        assert_eq!(d["type"], k.as_str());
        assert_eq!(d["sequence_number"], i as u64);
    }
    assert_eq!(ev[4].1["delta"], "Par");
    assert_eq!(ev[6].1["text"], "Paris.");
    let done = &ev[9].1["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(done["output"][0]["content"][0]["text"], "Paris.");
    assert_eq!(done["usage"]["input_tokens"], 5);
    assert_eq!(a.record.usage.map(|u| u.total_tokens), Some(7));
}

#[tokio::test(start_paused = true)]
async fn a_translated_stream_that_breaks_ends_in_response_failed_never_completed() {
    let p = policy(&["chatty"]);
    let first =
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Par\"}}]}\n\n";
    let t = Fake::new(vec![(
        "chatty",
        vec![Step::Answer {
            after_ms: 0,
            status: 200,
            headers: vec![("content-type".into(), "text/event-stream".into())],
            chunks: vec![
                (0, Ok(first.as_bytes().to_vec())),
                (5, Err(Failure::Transport("reset".into()))),
            ],
        }],
    )]);
    let a = create(
        &p,
        &t,
        r#"{"model":"chat-model","input":"Capital?","stream":true}"#,
    )
    .await;
    let ev = events(&a.text());
    let kinds: Vec<&str> = ev.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds.last(), Some(&"response.failed"), "{kinds:?}");
    assert!(kinds.contains(&"error"));
    assert!(!kinds.contains(&"response.completed"));
    assert_eq!(
        ev.last().unwrap().1["response"]["error"]["code"],
        "upstream_stream_broken"
    );
}

const NATIVE_ANSWER: &str = r#"{"id":"resp_abc123","object":"response","created_at":1741476542,"status":"completed","model":"native-m","output":[{"type":"message","id":"msg_1","status":"completed","role":"assistant","content":[{"type":"output_text","text":"Paris.","annotations":[]}]}],"parallel_tool_calls":true,"store":false,"tool_choice":"auto","tools":[],"usage":{"input_tokens":36,"input_tokens_details":{"cached_tokens":0},"output_tokens":87,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":123}}"#;

#[tokio::test(start_paused = true)]
async fn a_provider_that_serves_responses_gets_it_as_sent_with_store_false() {
    let p = policy(&["native"]);
    let t = Fake::new(vec![("native", vec![answer(200, NATIVE_ANSWER)])]);
    let a = create(
        &p,
        &t,
        r#"{"model":"chat-model","input":"Capital of France?","metadata":{"k":"v"}}"#,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let (url, body) = sent(&t, 0);
    assert_eq!(url, "http://native/v1/responses");
    assert_eq!(
        body,
        serde_json::json!({"model": "native-m", "input": "Capital of France?", "metadata": {"k": "v"}, "store": false})
    );
    assert_eq!(a.json()["output"][0]["content"][0]["text"], "Paris.");
    // Usage in the Responses shape: 36 × 1.0 + 87 × 2.0 per million.
    assert_eq!(a.record.usage.map(|u| u.total_tokens), Some(123));
    assert_eq!(a.header("x-meridian-cost-usd"), Some("0.00021000"));
}

/// A usage that is a JSON array is no usage, at any depth: serde's derived structs would read
/// `[36, 87]` as the counts, or `[3]` as the cached tokens, and bill them.
#[tokio::test(start_paused = true)]
async fn a_passed_through_answer_with_an_array_for_a_usage_object_is_not_billed_from_it() {
    let p = policy(&["native"]);
    let usage = r#""usage":{"input_tokens":36,"input_tokens_details":{"cached_tokens":0},"output_tokens":87,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":123}"#;
    assert!(NATIVE_ANSWER.contains(usage));
    let serve = |body: String| {
        let p = p.clone();
        async move {
            let t = Fake::new(vec![("native", vec![answer(200, &body)])]);
            create(
                &p,
                &t,
                r#"{"model":"chat-model","input":"Capital of France?"}"#,
            )
            .await
        }
    };
    // The whole usage an array: the answer is malformed (and falls back, here to nothing).
    let a = serve(NATIVE_ANSWER.replace(usage, r#""usage":[36,87]"#)).await;
    assert_eq!(a.status, 502, "{}", a.text());
    assert_eq!(
        a.json()["error"]["meridian"]["attempts"][0]["error"],
        "malformed response"
    );
    // Its details an array: served, with no usage read (the reservation is kept in full).
    let body = NATIVE_ANSWER.replace(
        r#""input_tokens_details":{"cached_tokens":0}"#,
        r#""input_tokens_details":[3]"#,
    );
    assert_ne!(body, NATIVE_ANSWER);
    let a = serve(body).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.record.usage.map(|u| u.total_tokens), None);
    assert_eq!(a.header("x-meridian-cost-usd"), None);
}

#[tokio::test(start_paused = true)]
async fn store_true_goes_only_where_retention_is_granted() {
    let body = r#"{"model":"chat-model","input":"hi","store":true}"#;
    let refused = create(&policy(&["native"]), &no_script(), body).await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert_eq!(refused.code(), "capability_not_granted");
    let p = policy(&["native", "keeper"]);
    let t = Fake::new(vec![("keeper", vec![answer(200, NATIVE_ANSWER)])]);
    let a = create(&p, &t, body).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(t.sent_to(), ["keeper"]);
    assert_eq!(sent(&t, 0).1["store"], true);
}

#[tokio::test(start_paused = true)]
async fn provider_run_tools_and_stored_state_are_capabilities_or_named() {
    // A web search tool: a capability no translated wire can carry.
    let a = create(
        &policy(&["chatty"]),
        &no_script(),
        r#"{"model":"chat-model","input":"news?","tools":[{"type":"web_search"}]}"#,
    )
    .await;
    assert_eq!(a.status, 403, "{}", a.text());
    assert!(a.text().contains("web_search"), "{}", a.text());
    // A follow-up by id to a provider that keeps nothing: named, with what to do instead.
    let a = create(
        &policy(&["chatty"]),
        &no_script(),
        r#"{"model":"chat-model","input":"and then?","previous_response_id":"resp_x"}"#,
    )
    .await;
    assert_eq!(a.status, 400, "{}", a.text());
    assert!(
        a.text().contains("send the whole conversation"),
        "{}",
        a.text()
    );
    // An unknown item type is refused, not forwarded.
    let a = create(
        &policy(&["native"]),
        &no_script(),
        r#"{"model":"chat-model","input":[{"type":"mystery_item"}]}"#,
    )
    .await;
    assert_eq!(a.status, 400);
    assert_eq!(a.code(), "unknown_parameter");
}

const NATIVE_STREAM: &str = concat!(
    "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_abc\",\"object\":\"response\",\"status\":\"in_progress\",\"output\":[]}}\n\n",
    "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":1,\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\"Paris.\"}\n\n",
    "event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":2,\"response\":{\"id\":\"resp_abc\",\"object\":\"response\",\"status\":\"completed\",\"output\":[],\"usage\":{\"input_tokens\":4,\"output_tokens\":2,\"total_tokens\":6}}}\n\n"
);

#[tokio::test(start_paused = true)]
async fn a_native_stream_passes_through_and_a_cut_one_ends_with_an_error_event() {
    let p = policy(&["native"]);
    let t = Fake::new(vec![(
        "native",
        vec![
            sse(&[(0, NATIVE_STREAM)]),
            Step::Answer {
                after_ms: 0,
                status: 200,
                headers: vec![("content-type".into(), "text/event-stream".into())],
                chunks: vec![(0, Ok(NATIVE_STREAM.as_bytes()[..300].to_vec()))],
            },
        ],
    )]);
    let body = r#"{"model":"chat-model","input":"Capital?","stream":true}"#;
    let a = create(&p, &t, body).await;
    assert_eq!(a.text(), NATIVE_STREAM);
    assert_eq!(a.record.stream_outcome, Some("done"));
    assert_eq!(a.record.usage.map(|u| u.total_tokens), Some(6));
    let b = create(&p, &t, body).await;
    let ev = events(&b.text());
    let last = &ev.last().unwrap().1;
    assert_eq!(last["type"], "error");
    assert_eq!(last["code"], "upstream_stream_truncated");
    assert!(!b.text().contains("response.completed"));
}

const KEY: &str = "a-test-key-for-sealing-response-ids";

fn secrets(name: &str) -> Option<String> {
    (name == crate::responses::KEY_VARIABLE).then(|| KEY.to_string())
}

/// Two tenants (`acme`, `globex`) and two providers that serve the API; `acme` may use only
/// `native`'s jurisdiction when `only_de` is set.
fn follow_policy(extra_rule: &str) -> Policy {
    let h = |k: &str| hex::encode(policy::hash_key(k));
    let text = format!(
        "version = 1\n\
         [[providers]]\nid = \"native\"\nbase_url = \"http://native/v1\"\nlocation = \"DE\"\nresponses = true\nmodels = {{ \"chat-model\" = \"native-m\" }}\n\
         [[providers]]\nid = \"other\"\nbase_url = \"http://other/v1\"\nlocation = \"US\"\nresponses = true\nmodels = {{ \"chat-model\" = \"other-m\" }}\n\
         [[tenants]]\nid = \"acme\"\nkeys = [\"sha256:{}\"]\n\
         [[tenants]]\nid = \"globex\"\nkeys = [\"sha256:{}\"]\n{extra_rule}",
        h("sk-acme"),
        h("sk-globex")
    );
    policy::load(&text, "follow").unwrap_or_else(|e| panic!("{e}"))
}

async fn as_tenant(p: &Policy, t: &Fake, key: &str, body: &str) -> Answer {
    let auth = format!("Bearer {key}");
    call_with(
        Ok(p),
        &secrets,
        t,
        "POST",
        "/v1/responses",
        &[JSON, ("authorization", &auth)],
        body,
    )
    .await
}

#[tokio::test(start_paused = true)]
async fn a_follow_up_goes_to_the_provider_that_holds_the_response_for_the_same_tenant_only() {
    let p = follow_policy("");
    let t = Fake::new(vec![(
        "native",
        vec![answer(200, NATIVE_ANSWER), answer(200, NATIVE_ANSWER)],
    )]);
    let first = as_tenant(&p, &t, "sk-acme", r#"{"model":"chat-model","input":"hi"}"#).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let id = first.json()["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("resp_mrd1~native~acme~resp_abc123~"), "{id}");
    assert_eq!(
        crate::responses::open(KEY.as_bytes(), &id).unwrap().id,
        "resp_abc123"
    );

    // The follow-up: to `native` only (no fallback to `other`), with the provider's own id.
    let follow =
        format!(r#"{{"model":"chat-model","input":"and?","previous_response_id":"{id}"}}"#);
    let second = as_tenant(&p, &t, "sk-acme", &follow).await;
    assert_eq!(second.status, 200, "{}", second.text());
    assert_eq!(t.sent_to(), ["native", "native"]);
    assert_eq!(sent(&t, 1).1["previous_response_id"], "resp_abc123");
    assert_eq!(second.record.candidates, ["native"]);

    // Another tenant: as if the id did not exist.
    let other = as_tenant(&p, &t, "sk-globex", &follow).await;
    assert_eq!(other.status, 404, "{}", other.text());
    // Altered: another provider under the same tag.
    let forged = follow.replace("~native~", "~other~");
    let f = as_tenant(&p, &t, "sk-acme", &forged).await;
    assert_eq!(f.status, 400);
    assert_eq!(f.code(), "invalid_response_id");
    // An id Meridian made from chat: nothing is stored.
    let stateless = as_tenant(
        &p,
        &t,
        "sk-acme",
        r#"{"model":"chat-model","input":"x","previous_response_id":"resp_mrd_abc"}"#,
    )
    .await;
    assert_eq!(stateless.code(), "response_not_stored");
    assert_eq!(t.sent_to().len(), 2, "none of these reached a provider");
}

#[tokio::test(start_paused = true)]
async fn a_follow_up_where_the_policy_no_longer_allows_the_caller_is_refused() {
    let t = Fake::new(vec![("native", vec![answer(200, NATIVE_ANSWER)])]);
    let first = as_tenant(
        &follow_policy(""),
        &t,
        "sk-acme",
        r#"{"model":"chat-model","input":"hi"}"#,
    )
    .await;
    let id = first.json()["id"].as_str().unwrap().to_string();
    // Now acme may only use providers in the US.
    let p = follow_policy(
        "[[rules]]\nid = \"acme-us\"\nwhen = { tenant = [\"acme\"] }\nrequire = { jurisdiction = [\"US\"] }\n",
    );
    let follow =
        format!(r#"{{"model":"chat-model","input":"and?","previous_response_id":"{id}"}}"#);
    let a = as_tenant(&p, &t, "sk-acme", &follow).await;
    assert_eq!(a.status, 403, "{}", a.text());
    assert_eq!(a.code(), "previous_response_not_allowed");
    assert!(a.text().contains("outside the allowed"), "{}", a.text());
    assert_eq!(t.sent_to(), ["native"]);
}

#[tokio::test(start_paused = true)]
async fn a_passed_through_stream_carries_the_sealed_id() {
    let p = follow_policy("");
    let t = Fake::new(vec![("native", vec![sse(&[(0, NATIVE_STREAM)])])]);
    let a = as_tenant(
        &p,
        &t,
        "sk-acme",
        r#"{"model":"chat-model","input":"hi","stream":true}"#,
    )
    .await;
    let ev = events(&a.text());
    let created = ev[0].1["response"]["id"].as_str().unwrap().to_string();
    assert!(
        created.starts_with("resp_mrd1~native~acme~resp_abc~"),
        "{created}"
    );
    assert_eq!(ev[2].1["response"]["id"], created.as_str());
    assert!(!a.text().contains("\"resp_abc\""));
}

async fn stored(p: &Policy, t: &Fake, method: &str, path: &str, key: &str) -> Answer {
    let auth = format!("Bearer {key}");
    call_with(
        Ok(p),
        &secrets,
        t,
        method,
        path,
        &[("authorization", &auth)],
        "",
    )
    .await
}

#[tokio::test(start_paused = true)]
async fn a_stored_response_is_fetched_and_deleted_where_it_is_kept_for_its_tenant_only() {
    let p = follow_policy("");
    let deleted = r#"{"id":"resp_abc123","object":"response.deleted","deleted":true}"#;
    let items = r#"{"object":"list","data":[{"type":"message","id":"msg_0","role":"user","content":[{"type":"input_text","text":"hi"}]}],"first_id":"msg_0","last_id":"msg_0","has_more":false}"#;
    let t = Fake::new(vec![(
        "native",
        vec![
            answer(200, NATIVE_ANSWER),
            answer(200, NATIVE_ANSWER),
            answer(200, items),
            answer(200, deleted),
        ],
    )]);
    let first = as_tenant(&p, &t, "sk-acme", r#"{"model":"chat-model","input":"hi"}"#).await;
    let id = first.json()["id"].as_str().unwrap().to_string();
    let path = format!("/v1/responses/{id}");

    let got = stored(&p, &t, "GET", &path, "sk-acme").await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["id"], id.as_str(), "the id the client knows");
    let r = t.requests.borrow()[1].clone();
    assert_eq!(r.url, "http://native/v1/responses/resp_abc123");
    assert_eq!(r.method, crate::transport::UpMethod::Get);
    assert!(r.body.is_empty());

    let list = stored(
        &p,
        &t,
        "GET",
        &format!("{path}/input_items?limit=5"),
        "sk-acme",
    )
    .await;
    assert_eq!(list.status, 200);
    assert_eq!(
        t.requests.borrow()[2].url,
        "http://native/v1/responses/resp_abc123/input_items?limit=5"
    );

    let other = stored(&p, &t, "GET", &path, "sk-globex").await;
    assert_eq!(other.status, 404);
    let forged = stored(
        &p,
        &t,
        "GET",
        &path.replace("~acme~", "~globex~"),
        "sk-globex",
    )
    .await;
    assert_eq!(forged.status, 404);

    let del = stored(&p, &t, "DELETE", &path, "sk-acme").await;
    assert_eq!(del.status, 200);
    assert_eq!(
        t.requests.borrow()[3].method,
        crate::transport::UpMethod::Delete
    );
    assert_eq!(del.json()["deleted"], true);
    assert_eq!(t.sent_to().len(), 4, "the refused ones reached no provider");

    let odd = stored(&p, &t, "GET", &format!("{path}?debug=1"), "sk-acme").await;
    assert_eq!(odd.status, 400);
    assert_eq!(odd.code(), "unknown_parameter");
    let none = stored(&p, &t, "GET", "/v1/responses/resp_mrd_abc", "sk-acme").await;
    assert_eq!(none.code(), "response_not_stored");
    let post = stored(&p, &t, "POST", &path, "sk-acme").await;
    assert_eq!(post.status, 405);
}

/// Two providers with equal weights: load is spread by request id.
fn spread(extra: &str) -> Policy {
    let text = format!(
        "version = 1\n[settings]\nallow_anonymous = true\n{extra}\n\
         [[providers]]\nid = \"one\"\nbase_url = \"http://one/v1\"\nlocation = \"DE\"\nweight = 1\nmodels = {{ \"chat-model\" = \"m\" }}\n\
         [[providers]]\nid = \"two\"\nbase_url = \"http://two/v1\"\nlocation = \"DE\"\nweight = 1\nmodels = {{ \"chat-model\" = \"m\" }}\n\
         [[rules]]\nid = \"spread\"\nprefer = {{ sort = \"weighted\" }}\n"
    );
    policy::load(&text, "spread").unwrap_or_else(|e| panic!("{e}"))
}

async fn served_by(p: &Policy, n: usize, body: &str, headers: &[(&str, &str)]) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..n {
        let t = Fake::new(vec![("one", vec![ok_json(0)]), ("two", vec![ok_json(0)])]);
        let id = format!("req-{i}");
        let mut h = vec![JSON, ("x-request-id", id.as_str())];
        h.extend_from_slice(headers);
        let a = call(p, &t, "POST", "/v1/responses", &h, body).await;
        out.push(a.header("x-meridian-provider").unwrap_or("").to_string());
    }
    out
}

#[tokio::test(start_paused = true)]
async fn one_conversation_stays_on_one_provider_where_load_is_spread() {
    let p = spread("");
    // Without a conversation key, the request ids spread the load over both.
    let plain = served_by(&p, 16, r#"{"model":"chat-model","input":"hi"}"#, &[]).await;
    assert!(
        plain.contains(&"one".into()) && plain.contains(&"two".into()),
        "{plain:?}"
    );
    // With one, every request of the conversation goes to the same provider.
    for key in ["conv-a", "conv-b", "conv-c"] {
        let body = format!(r#"{{"model":"chat-model","input":"hi","prompt_cache_key":"{key}"}}"#);
        let served = served_by(&p, 8, &body, &[]).await;
        assert!(served.iter().all(|s| s == &served[0]), "{key}: {served:?}");
    }
    // The policy can name a header for it instead.
    let p = spread("[settings.request]\naffinity_header = \"x-conversation\"");
    let served = served_by(
        &p,
        8,
        r#"{"model":"chat-model","input":"hi"}"#,
        &[("x-conversation", "thread-42")],
    )
    .await;
    assert!(served.iter().all(|s| s == &served[0]), "{served:?}");
}

#[tokio::test(start_paused = true)]
async fn an_anthropic_provider_gets_messages_and_the_client_a_response_object() {
    let text = "version = 1\n[settings]\nallow_anonymous = \"paid\"\n\
        [[providers]]\nid = \"claude\"\nkind = \"anthropic\"\nbase_url = \"http://claude/v1\"\nlocation = \"US\"\nmodels = { \"chat-model\" = \"claude-x\" }\n\
        [[rules]]\nid = \"anon\"\nwhen = { anonymous = true }\nlimits = { requests_per_minute = 100 }\n";
    let p = policy::load(text, "claude").unwrap();
    let answer_body = r#"{"id":"msg_01","type":"message","role":"assistant","model":"claude-x","content":[{"type":"text","text":"Paris."},{"type":"tool_use","id":"toolu_1","name":"lookup","input":{"q":"France"}}],"stop_reason":"tool_use","stop_sequence":null,"usage":{"input_tokens":20,"output_tokens":7}}"#;
    let t = Fake::new(vec![("claude", vec![answer(200, answer_body)])]);
    let store = crate::testing::MemStore::default();
    let a = call_store(
        Ok(&p),
        &|_| None,
        Some(&store),
        &t,
        "POST",
        "/v1/responses",
        &[JSON],
        r#"{"model":"chat-model","instructions":"Be brief.","input":[{"role":"user","content":"Capital of France?"}],"max_output_tokens":100,
            "tools":[{"type":"function","name":"lookup","parameters":{"type":"object"}}]}"#,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let (url, sent) = sent(&t, 0);
    assert_eq!(url, "http://claude/v1/messages");
    assert_eq!(sent["system"], "Be brief.");
    assert_eq!(sent["max_tokens"], 100);
    assert_eq!(sent["messages"][0]["role"], "user");
    assert_eq!(sent["tools"][0]["name"], "lookup");
    let r = a.json();
    assert_eq!(r["output"][0]["content"][0]["text"], "Paris.");
    assert_eq!(r["output"][1]["type"], "function_call");
    assert_eq!(r["output"][1]["call_id"], "toolu_1");
    assert_eq!(r["output"][1]["arguments"], "{\"q\":\"France\"}");
    assert_eq!(r["usage"]["input_tokens"], 20);
    assert_eq!(r["usage"]["output_tokens"], 7);
}

#[tokio::test(start_paused = true)]
async fn reasoning_items_go_to_the_provider_that_made_them_and_are_named_elsewhere() {
    let body = r#"{"model":"chat-model","input":[
        {"role":"user","content":"Think, then answer."},
        {"type":"reasoning","id":"rs_1","summary":[{"type":"summary_text","text":"Considered it."}],"encrypted_content":"gAAAA"},
        {"role":"assistant","content":[{"type":"output_text","text":"42"}]},
        {"role":"user","content":"Why?"}]}"#;
    let chat_only = create(&policy(&["chatty"]), &no_script(), body).await;
    assert_eq!(chat_only.status, 400, "{}", chat_only.text());
    assert!(
        chat_only.text().contains("`input[1]` (a `reasoning` item)"),
        "{}",
        chat_only.text()
    );
    let t = Fake::new(vec![("native", vec![answer(200, NATIVE_ANSWER)])]);
    let native = create(&policy(&["native"]), &t, body).await;
    assert_eq!(native.status, 200, "{}", native.text());
    assert_eq!(sent(&t, 0).1["input"][1]["encrypted_content"], "gAAAA");
}

#[tokio::test(start_paused = true)]
async fn an_output_bound_meridian_sets_is_the_responses_field() {
    // A tenant's cap, and a limit that needs a bound: both set `max_output_tokens`, which both
    // the API and its translation to chat understand.
    let h = hex::encode(policy::hash_key("sk-capped"));
    let text = format!(
        "version = 1\n[[providers]]\nid = \"chatty\"\nbase_url = \"http://chatty/v1\"\nlocation = \"DE\"\nmodels = {{ \"chat-model\" = {{ id = \"m\", input_price = 1.0, output_price = 1.0 }} }}\n\
         [[providers]]\nid = \"native\"\nbase_url = \"http://native/v1\"\nlocation = \"DE\"\nresponses = true\nmodels = {{ \"native-model\" = \"n\" }}\n\
         [[tenants]]\nid = \"capped\"\nkeys = [\"sha256:{h}\"]\nmax_tokens = 64\nlimits = {{ usd_per_day = 5.0 }}\n"
    );
    let p = policy::load(&text, "cap").unwrap();
    let t = Fake::new(vec![
        ("chatty", vec![answer(200, CHAT_ANSWER)]),
        ("native", vec![answer(200, NATIVE_ANSWER)]),
    ]);
    let store = crate::testing::MemStore::default();
    for model in ["chat-model", "native-model"] {
        let body = format!(r#"{{"model":"{model}","input":"hi"}}"#);
        let a = call_store(
            Ok(&p),
            &|_| None,
            Some(&store),
            &t,
            "POST",
            "/v1/responses",
            &[JSON, ("authorization", "Bearer sk-capped")],
            &body,
        )
        .await;
        assert_eq!(a.status, 200, "{model}: {}", a.text());
    }
    assert_eq!(
        sent(&t, 0).1["max_tokens"],
        64,
        "translated to chat's field"
    );
    assert_eq!(sent(&t, 1).1["max_output_tokens"], 64);
    assert!(sent(&t, 1).1.get("max_tokens").is_none());
}

#[tokio::test(start_paused = true)]
async fn an_anthropic_stream_comes_back_as_responses_events() {
    let p = policy::load(
        "version = 1\n[settings]\nallow_anonymous = \"paid\"\n\
         [[providers]]\nid = \"claude\"\nkind = \"anthropic\"\nbase_url = \"http://claude/v1\"\nlocation = \"US\"\nmodels = { \"chat-model\" = \"claude-x\" }\n",
        "claude",
    )
    .unwrap();
    let stream = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-x\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":11,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Bonjour\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":4}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
    );
    let t = Fake::new(vec![("claude", vec![sse(&[(0, stream)])])]);
    let a = create(
        &p,
        &t,
        r#"{"model":"chat-model","input":"Say hello in French.","stream":true}"#,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(sent(&t, 0).1["stream"], true);
    let ev = events(&a.text());
    let deltas: Vec<&str> = ev
        .iter()
        .filter(|(k, _)| k == "response.output_text.delta")
        .map(|(_, d)| d["delta"].as_str().unwrap())
        .collect();
    assert_eq!(deltas.concat(), "Bonjour");
    let (last, done) = ev.last().unwrap();
    assert_eq!(last, "response.completed");
    assert_eq!(
        done["response"]["output"][0]["content"][0]["text"],
        "Bonjour"
    );
    assert_eq!(done["response"]["usage"]["input_tokens"], 11);
    assert_eq!(done["response"]["usage"]["output_tokens"], 4);
}
