//! What speaking Anthropic's wire costs against passing OpenAI's through, in the same run:
//! per request (building the upstream body: OpenAI → Anthropic translation against the
//! pass-through path's own work, re-serialising the body with the upstream model), per whole
//! answer (Anthropic → OpenAI against parsing the OpenAI answer for usage), and per streamed
//! event (the translator plus the stream guard against the guard alone). And an Anthropic event
//! passed through to an Anthropic client: the guard reading it (`stream_events = "checked"`)
//! against the guard checking its outline only (`"framed"`).
//!
//! `MERIDIAN_WIRE_CALLS=N MERIDIAN_WIRE_CASE=request|request-base|answer|answer-base|event|event-base|native-event|native-event-framed`
//! runs only N of one case, for instruction counts under callgrind (scripts/bench).

use std::time::Instant;

use meridian::sse::{Dialect, SseGuard};
use meridian::wire::translate::{chat_from_messages, messages_from_chat};
use serde_json::{json, Map, Value};

mod common;
use common::pct;

fn chat_body() -> Map<String, Value> {
    match json!({
        "model": "chat-model",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant. Answer briefly and cite your sources."},
            {"role": "user", "content": "What are the main differences between TCP and UDP, and when should I use each? Please give two examples of protocols built on each."}
        ],
        "temperature": 0.7,
        "max_tokens": 512,
        "stream": true
    }) {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

const ANSWER: &str = r#"{"id":"msg_01","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"TCP is connection-oriented and reliable; UDP is connectionless and best-effort. Use TCP for HTTP and SMTP, UDP for DNS and RTP."}],"stop_reason":"end_turn","usage":{"input_tokens":52,"output_tokens":38}}"#;
const OPENAI_ANSWER: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"TCP is connection-oriented and reliable; UDP is connectionless and best-effort. Use TCP for HTTP and SMTP, UDP for DNS and RTP."},"finish_reason":"stop"}],"usage":{"prompt_tokens":52,"completion_tokens":38,"total_tokens":90}}"#;
const EVENT: &[u8] = b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" connection-oriented\"}}\n\n";
const OPENAI_EVENT: &[u8] = b"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" connection-oriented\"},\"finish_reason\":null}]}\n\n";
const START: &[u8] = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01\",\"model\":\"claude-sonnet-4-5\",\"usage\":{\"input_tokens\":52,\"output_tokens\":1}}}\n\n";

fn request(body: &Map<String, Value>) -> Vec<u8> {
    serde_json::to_vec(&messages_from_chat::request(body, "claude-sonnet-4-5", 4096).unwrap())
        .unwrap()
}

fn request_base(body: &Map<String, Value>) -> Vec<u8> {
    let mut b = body.clone();
    b.insert("model".into(), Value::String("gpt-4o-mini".into()));
    serde_json::to_vec(&b).unwrap()
}

fn answer() -> Vec<u8> {
    let v: Value = serde_json::from_str(ANSWER).unwrap();
    chat_from_messages::response(&v, 1).to_string().into_bytes()
}

fn answer_base() -> Option<u64> {
    let v: Value = serde_json::from_str(OPENAI_ANSWER).unwrap();
    v["usage"]["total_tokens"].as_u64()
}

/// Per event: the translator and the guard after it (a translator primed with message_start).
fn event(t: &mut chat_from_messages::StreamTranslator, g: &mut SseGuard) -> usize {
    let out = t.feed(EVENT);
    g.feed(out).send.len()
}

fn event_base(g: &mut SseGuard) -> usize {
    g.feed(OPENAI_EVENT).send.len()
}

/// An Anthropic stream's guard after `message_start`, checking every event or, `framed`, the
/// outline of those that cannot name what it reads.
fn native_guard(framed: bool) -> SseGuard {
    let mut g = SseGuard::for_dialect(Dialect::Anthropic);
    g.feed(START);
    if framed {
        g.check_framing_only();
    }
    g
}

fn main() {
    let body = chat_body();
    if let Some(n) = std::env::var("MERIDIAN_WIRE_CALLS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        let case = std::env::var("MERIDIAN_WIRE_CASE").unwrap_or_default();
        let mut t = chat_from_messages::StreamTranslator::new(1, false);
        let mut g = SseGuard::new();
        g.feed(t.feed(START));
        let mut native = native_guard(case == "native-event-framed");
        for _ in 0..n {
            match case.as_str() {
                "request" => {
                    std::hint::black_box(request(&body));
                }
                "request-base" => {
                    std::hint::black_box(request_base(&body));
                }
                "answer" => {
                    std::hint::black_box(answer());
                }
                "answer-base" => {
                    std::hint::black_box(answer_base());
                }
                "event" => {
                    std::hint::black_box(event(&mut t, &mut g));
                }
                "native-event" | "native-event-framed" => {
                    std::hint::black_box(native.feed(EVENT).send.len());
                }
                _ => {
                    std::hint::black_box(event_base(&mut g));
                }
            }
        }
        return;
    }
    let time = |f: &mut dyn FnMut()| {
        let mut v = Vec::new();
        for _ in 0..200 {
            let t = Instant::now();
            for _ in 0..32 {
                f();
            }
            v.push(t.elapsed().as_secs_f64() * 1e6 / 32.0);
        }
        pct(&mut v, 0.5)
    };
    let (mut t, mut g) = (
        chat_from_messages::StreamTranslator::new(1, false),
        SseGuard::new(),
    );
    g.feed(t.feed(START));
    let mut gb = SseGuard::new();
    let rq = time(&mut || {
        std::hint::black_box(request(&body));
    });
    let rqb = time(&mut || {
        std::hint::black_box(request_base(&body));
    });
    let an = time(&mut || {
        std::hint::black_box(answer());
    });
    let anb = time(&mut || {
        std::hint::black_box(answer_base());
    });
    let ev = time(&mut || {
        std::hint::black_box(event(&mut t, &mut g));
    });
    let evb = time(&mut || {
        std::hint::black_box(event_base(&mut gb));
    });
    let (mut nc, mut nf) = (native_guard(false), native_guard(true));
    let natc = time(&mut || {
        std::hint::black_box(nc.feed(EVENT).send.len());
    });
    let natf = time(&mut || {
        std::hint::black_box(nf.feed(EVENT).send.len());
    });
    println!(
        "an Anthropic event passed through (medians): read {natc:.3} µs, framed {natf:.3} µs ({:.2}×)",
        natf / natc
    );
    println!(
        "Anthropic wire (medians): request {rq:.2} µs against {rqb:.2} µs pass-through ({:.2}×); whole answer {an:.2} µs against {anb:.2} µs ({:.2}×); streamed event {ev:.2} µs against {evb:.2} µs ({:.2}×)",
        rq / rqb,
        an / anb,
        ev / evb
    );
}
