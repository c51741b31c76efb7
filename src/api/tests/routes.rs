//! Routes, methods and request bodies: what reaches a handler at all, and how answers are framed.

use super::*;

#[test]
fn routes() {
    assert_eq!(
        route("POST", "/v1/chat/completions"),
        Route::Inference(Endpoint::Chat)
    );
    assert_eq!(
        route("POST", "/v1/embeddings?x=1"),
        Route::Inference(Endpoint::Embeddings)
    );
    assert_eq!(
        route("GET", "/v1/chat/completions"),
        Route::MethodNotAllowed("POST")
    );
    assert_eq!(route("GET", "/v1/models/"), Route::Models);
    assert_eq!(route("HEAD", "/healthz"), Route::Health);
    assert_eq!(route("POST", "/v1/models"), Route::MethodNotAllowed("GET"));
    assert_eq!(route("GET", "/nope"), Route::NotFound);
    assert_eq!(route("OPTIONS", "/v1/chat/completions"), Route::Preflight);
    assert_eq!(route("OPTIONS", "/anything/at/all"), Route::Preflight);
    assert_eq!(route("GET", "/healthz"), Route::Health);
}

#[tokio::test(start_paused = true)]
async fn bodies_must_be_json_and_fit() {
    let p = load("");
    let t = no_script();
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let a = chat(&p, &t, &[("content-type", ct)], CHAT).await;
        assert_eq!(
            (a.status, a.code().as_str()),
            (415, "unsupported_media_type"),
            "{ct}"
        );
    }
    let a = chat(
        &p,
        &t,
        &[("content-type", "Application/JSON; charset=utf-8")],
        "[]",
    )
    .await;
    assert_eq!(
        (a.status, a.code().as_str()),
        (400, "invalid_json"),
        "a JSON media type with parameters passes"
    );
    // Larger than the limit without saying so: 413 all the same.
    let big = format!(r#"{{"model":"chat-model","pad":"{}"}}"#, "x".repeat(3000));
    let a = chat(&p, &t, &[JSON], &big).await;
    assert_eq!((a.status, a.code().as_str()), (413, "request_too_large"));
    // A model name past 256 bytes is refused before any lookup.
    let long = format!(r#"{{"model":"{}"}}"#, "m".repeat(257));
    let a = chat(&p, &t, &[JSON], &long).await;
    assert_eq!((a.status, a.code().as_str()), (400, "invalid_model"));
    assert_eq!(a.record.model, None);
    // Sort values the decision does not implement are refused, not treated as another.
    let a = chat(
        &p,
        &t,
        &[JSON],
        &chat_body(r#","provider":{"sort":"throughput"}"#),
    )
    .await;
    assert_eq!(
        (a.status, a.code().as_str()),
        (400, "unsupported_provider_preference")
    );
    assert!(t.sent_to().is_empty());
}

#[test]
fn a_whole_body_is_framed_by_its_length_except_a_204() {
    let reply = |status: u16| Reply::<crate::testing::FakeBody> {
        status,
        headers: vec![],
        body: Body::Full(b"{\"ok\":true}".to_vec()),
        record: Record::default(),
    };
    let mut ok = reply(200);
    ok.frame_by_length();
    assert_eq!(
        ok.headers,
        [("content-length".to_string(), "11".to_string())]
    );
    let mut empty = reply(204);
    empty.frame_by_length();
    assert!(empty.headers.is_empty());
}
