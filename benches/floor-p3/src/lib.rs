//! The WASI 0.3 counterpart of `benches/floor`, written the plain spin-sdk 7 way, for
//! `scripts/count-instructions` and `benches/gateway.rs`:
//!
//! - `POST /empty`: answers 200 with a fixed JSON body at once;
//! - `POST /v1/chat/completions`: reads the body, sends it to the engine at 127.0.0.1:11434 and
//!   answers with the engine's whole answer (the least a forwarding component costs);
//! - `POST /stream/v1/chat/completions`: the same, but returns the engine's response as it
//!   comes (its body streamed through).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use spin_sdk::http::{IntoResponse, Request};
use spin_sdk::http_service;

const ENGINE: &str = "http://127.0.0.1:11434/v1/chat/completions";

fn json(status: u16, body: impl Into<Bytes>) -> http::Response<Full<Bytes>> {
    http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(body.into()))
        .unwrap_or_default()
}

#[http_service]
async fn handle(req: Request) -> impl IntoResponse {
    let path = req.uri().path().to_string();
    let Ok(body) = req.into_body().collect().await else {
        return json(400, "{}").into_response();
    };
    let forward = http::Request::builder()
        .method("POST")
        .uri(ENGINE)
        .header("content-type", "application/json")
        .body(Full::new(body.to_bytes()));
    let Ok(forward) = forward else {
        return json(500, "{}").into_response();
    };
    match path.as_str() {
        "/v1/chat/completions" => match spin_sdk::http::send(forward).await {
            Ok(r) => {
                let status = r.status().as_u16();
                match r.into_body().collect().await {
                    Ok(b) => json(status, b.to_bytes()).into_response(),
                    Err(_) => json(502, "{}").into_response(),
                }
            }
            Err(_) => json(502, "{}").into_response(),
        },
        "/stream/v1/chat/completions" => match spin_sdk::http::send(forward).await {
            Ok(r) => r.into_response(),
            Err(_) => json(502, "{}").into_response(),
        },
        _ => json(200, "{\"ok\":true}").into_response(),
    }
}
