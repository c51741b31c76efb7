//! Reference points for `cargo bench --bench gateway` and `scripts/count-instructions`, served
//! by the same host as Meridian:
//!
//! - `POST /empty`: answers 200 with a fixed JSON body and does nothing else (the host's own
//!   per-request cost: accept, instantiate, call, respond);
//! - `POST /v1/chat/completions`: reads the body, sends it unchanged to the engine at
//!   127.0.0.1:11434 (the address Meridian's default policy uses for `local-only` traffic) and
//!   returns the answer (the least any forwarding component costs: one outbound request);
//! - `POST /stream/v1/chat/completions`: the same, but passes the answer through chunk by chunk
//!   as it arrives, written the plain spin-sdk way (response handed over, then each chunk
//!   sent): the least a streaming forwarder costs.
//!
//! And two misbehaving routes for the host's abuse tests (`tests/e2e_host.rs`), which no
//! benchmark calls: `/abuse/loop` spins forever, `/abuse/alloc` allocates until memory runs out.

use futures::{SinkExt, StreamExt};
use spin_sdk::http::{
    Fields, IncomingRequest, IncomingResponse, Method, OutgoingResponse, Request, Response,
    ResponseOutparam,
};
use spin_sdk::http_component;

const ENGINE: &str = "http://127.0.0.1:11434/v1/chat/completions";

#[http_component]
async fn handle(req: IncomingRequest, out: ResponseOutparam) {
    let path = req.path_with_query().unwrap_or_default();
    let body = match req.into_body().await {
        Ok(b) => b,
        Err(_) => return answer(out, 400, b"{}".to_vec()).await,
    };
    match path.as_str() {
        "/v1/chat/completions" => {
            let result: anyhow::Result<Response> =
                async { Ok(spin_sdk::http::send(forward(body)).await?) }.await;
            match result {
                Ok(r) => answer(out, *r.status(), r.body().to_vec()).await,
                Err(_) => answer(out, 502, b"{}".to_vec()).await,
            }
        }
        "/stream/v1/chat/completions" => {
            let upstream: IncomingResponse = match spin_sdk::http::send(forward(body)).await {
                Ok(r) => r,
                Err(_) => return answer(out, 502, b"{}".to_vec()).await,
            };
            let headers =
                Fields::from_list(&[("content-type".into(), b"text/event-stream".to_vec())])
                    .unwrap_or_else(|_| Fields::new());
            let resp = OutgoingResponse::new(headers);
            let _ = resp.set_status_code(upstream.status());
            let mut sink = resp.take_body();
            out.set(resp);
            let mut chunks = upstream.take_body_stream();
            while let Some(Ok(chunk)) = chunks.next().await {
                if sink.send(chunk).await.is_err() {
                    break;
                }
            }
        }
        "/abuse/loop" => {
            // Said before it spins, so a test can wait for the loop rather than guess.
            println!("abuse: loop started");
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        "/abuse/alloc" => {
            let mut held: Vec<Vec<u8>> = Vec::new();
            loop {
                held.push(std::hint::black_box(vec![1u8; 1 << 20]));
            }
        }
        _ => answer(out, 200, b"{\"ok\":true}".to_vec()).await,
    }
}

fn forward(body: Vec<u8>) -> Request {
    Request::builder()
        .method(Method::Post)
        .uri(ENGINE)
        .header("content-type", "application/json")
        .header("content-length", body.len().to_string())
        .body(body)
        .build()
}

async fn answer(out: ResponseOutparam, status: u16, body: Vec<u8>) {
    let headers = Fields::from_list(&[("content-type".into(), b"application/json".to_vec())])
        .unwrap_or_else(|_| Fields::new());
    let resp = OutgoingResponse::new(headers);
    let _ = resp.set_status_code(status);
    let _ = out.set_with_body(resp, body).await;
}
