//! End to end: what a request may ask a provider to do, through the built component in the real
//! runtime, driven by the official OpenAI and Anthropic Python SDKs against recording upstreams.
//! The same requests are refused under a policy that grants nothing and served where a policy
//! grants each capability; the recordings show exactly what reached each provider.

mod support;

use serde_json::{json, Value};
use support::clients::{self, python};
use support::{policy_for, Meridian, Mock, Recorded, Script};

fn openai_ok(_: &Recorded, _: usize) -> Script {
    Script::ok("ok")
}

fn anthropic_ok(_: &Recorded, _: usize) -> Script {
    Script::Json {
        status: 200,
        body: json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "c",
            "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
            "stop_sequence": null, "usage": {"input_tokens": 1, "output_tokens": 1}})
        .to_string(),
        headers: vec![],
    }
}

struct Upstreams {
    open: Mock,
    azure: Mock,
    claude: Mock,
    engine: Mock,
}

async fn upstreams() -> Upstreams {
    Upstreams {
        open: Mock::with(openai_ok).await,
        azure: Mock::with(openai_ok).await,
        claude: Mock::with(anthropic_ok).await,
        engine: Mock::with(openai_ok).await,
    }
}

/// `grant`: each capability granted to the provider the script sends it to.
async fn run(u: &Upstreams, mode: &str) {
    let grant = |caps: &str| {
        if mode == "grant" {
            format!("capabilities = [{caps}]")
        } else {
            String::new()
        }
    };
    let open = if mode == "grant" {
        grant("\"store\"")
    } else {
        "retention_days = 0\nzdr = true".to_string()
    };
    let policy = policy_for(
        &[
            ("open", &u.open, "US", &open),
            (
                "azure",
                &u.azure,
                "SE",
                &format!("kind = \"azure\"\n{}", grant("\"data_sources\"")),
            ),
            (
                "claude",
                &u.claude,
                "IE",
                &format!("kind = \"anthropic\"\n{}", grant("\"mcp\", \"web_fetch\"")),
            ),
            (
                "engine",
                &u.engine,
                "DE",
                &format!("self_hosted = true\n{}", grant("\"remote_media\"")),
            ),
        ],
        "",
    )
    .replace("max_body_bytes = 4096", "max_body_bytes = 65536");
    let m = Meridian::with_policy(&policy, &[]).await;
    clients::run(
        &python(),
        "boundary_sdk.py",
        &[("MERIDIAN_URL", m.url.as_str()), ("MERIDIAN_MODE", mode)],
    )
    .await;
    // Every refusal is in the log with its code, and names no prompt text.
    let logs = m.logs();
    let refused: Vec<&Value> = logs.iter().filter(|l| l["status"] == 403).collect();
    assert_eq!(
        refused.len(),
        if mode == "deny" { 5 } else { 0 },
        "{logs:#?}"
    );
    for l in refused {
        assert_eq!(l["error_code"], "capability_not_granted", "{l}");
        assert!(!l.to_string().contains("\"hi\""), "{l}");
    }
}

#[tokio::test]
async fn capabilities_the_policy_does_not_grant_never_reach_a_provider() {
    let u = upstreams().await;
    run(&u, "deny").await;
    assert!(
        u.open.requests().is_empty(),
        "store and the unknown field stayed home"
    );
    assert!(u.azure.requests().is_empty(), "data_sources stayed home");
    assert!(
        u.claude.requests().is_empty(),
        "mcp_servers and web_fetch stayed home"
    );
    let engine = u.engine.requests();
    assert_eq!(engine.len(), 1, "only the inline image reached the engine");
    assert!(
        engine[0].body["messages"][0]["content"][1]["image_url"]["url"]
            .as_str()
            .unwrap()
            .starts_with("data:")
    );
}

#[tokio::test]
async fn capabilities_the_policy_grants_reach_the_provider_it_grants_them_to() {
    let u = upstreams().await;
    run(&u, "grant").await;
    let open = u.open.requests();
    assert_eq!(
        open.len(),
        1,
        "store=True served; the unknown field refused"
    );
    assert_eq!(open[0].body["store"], true);
    let azure = u.azure.requests();
    assert_eq!(azure.len(), 1);
    assert_eq!(azure[0].body["data_sources"][0]["type"], "azure_search");
    let claude = u.claude.requests();
    assert_eq!(claude.len(), 2);
    assert_eq!(
        claude[0].body["mcp_servers"][0]["url"],
        "https://mcp.example/sse"
    );
    assert!(claude[0]
        .header("anthropic-beta")
        .is_some_and(|b| b.contains("mcp-client-2025-04-04")));
    assert_eq!(claude[1].body["tools"][0]["type"], "web_fetch_20250910");
    for r in &claude {
        assert!(
            r.body.get("provider").is_none(),
            "Meridian's own field is removed"
        );
    }
    assert_eq!(
        u.engine.requests().len(),
        2,
        "the remote image and the inline one"
    );
}

/// An Anthropic upstream that, after its first words, sends only `ping` events for twelve
/// seconds: the translated stream ends at the policy's stream deadline (1.5 s) with an error
/// event, in the real runtime, not when the upstream stops.
#[tokio::test]
async fn an_anthropic_stream_of_pings_ends_at_the_stream_deadline() {
    let claude = Mock::with(|_, _| {
        let mut events = vec![
            json!({"type": "message_start", "message": {"id": "msg_p", "type": "message", "role": "assistant", "content": [], "model": "c", "usage": {"input_tokens": 1, "output_tokens": 1}}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
        ];
        events.extend(std::iter::repeat_n(json!({"type": "ping"}), 120));
        Script::Sse {
            events: events
                .iter()
                .map(|e| format!("event: {}\ndata: {e}", e["type"].as_str().unwrap_or("")))
                .collect(),
            gap_ms: 100,
            end: support::mock::SseEnd::Done,
        }
    })
    .await;
    let policy = policy_for(
        &[("claude", &claude, "IE", "kind = \"anthropic\"")],
        "",
    )
    .replace(
        "max_body_bytes = 4096\n",
        "max_body_bytes = 4096\n[settings.plan]\nstream_deadline_ms = 1500\nidle_timeout_ms = 5000\n",
    );
    let m = Meridian::with_policy(&policy, &[]).await;
    let started = std::time::Instant::now();
    let r = reqwest::Client::new()
        .post(m.at("/v1/chat/completions"))
        .json(&json!({"model": "chat-model", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = tokio::time::timeout(std::time::Duration::from_secs(15), r.text())
        .await
        .expect("the stream ended")
        .unwrap();
    let took = started.elapsed();
    assert!(text.contains("\"Hi\""), "{text}");
    assert!(text.contains("stream_deadline_exceeded"), "{text}");
    assert!(!text.contains("[DONE]"), "never a clean end: {text}");
    assert!(
        took < std::time::Duration::from_secs(6),
        "ended after {took:?}, not at the deadline"
    );
}
