//! Two reference points for `cargo bench --bench gateway`, served by the same host as Meridian:
//!
//! - `POST /empty`: answers 200 with a fixed JSON body and does nothing else (the host's own
//!   per-request cost: accept, instantiate, call, respond);
//! - `POST /v1/chat/completions`: reads the body, sends it unchanged to the engine at
//!   127.0.0.1:11434 (the address Meridian's default policy uses for `local-only` traffic) and
//!   returns the answer (the least any forwarding component costs: one outbound request).

use spin_sdk::http::{IntoResponse, Method, Request, Response};
use spin_sdk::http_component;

#[http_component]
async fn handle(req: Request) -> anyhow::Result<impl IntoResponse> {
    if req.path() != "/v1/chat/completions" {
        return Ok(Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body("{\"ok\":true}")
            .build());
    }
    let out = Request::builder()
        .method(Method::Post)
        .uri("http://127.0.0.1:11434/v1/chat/completions")
        .header("content-type", "application/json")
        .body(req.body().to_vec())
        .build();
    let answer: Response = spin_sdk::http::send(out).await?;
    Ok(Response::builder()
        .status(*answer.status())
        .header("content-type", "application/json")
        .body(answer.body().to_vec())
        .build())
}
