//! End to end: many requests on one kept-alive connection, as the SDKs and browsers send them,
//! through meridian-host with its sockets as Spin leaves them (no TCP_NODELAY) and with
//! `--tcp-nodelay`. Checks every answer and its HTTP/1.1 framing on the wire, read by hand from
//! one TCP connection: buffered answers carry `Content-Length` (no chunked terminator to wait
//! for), streams are chunked and end right after `[DONE]`, and every request writes its log line.
//! Timing is measured by `scripts/bench`, never asserted here.

mod support;

use std::time::Duration;

use support::mock::{chunk, SseEnd};
use support::{policy_for, Meridian, Mock, Script};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// One response as read from the wire.
struct Wire {
    status: u16,
    headers: Vec<(String, String)>,
    /// The body after undoing chunked framing.
    body: Vec<u8>,
    chunked: bool,
}

impl Wire {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request on `conn` and reads exactly one response (never past its end).
async fn exchange(conn: &mut BufReader<TcpStream>, path: &str, body: &str) -> Wire {
    let req = format!(
        "POST {path} HTTP/1.1\r\nhost: meridian.test\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.get_mut().write_all(req.as_bytes()).await.unwrap();
    let mut line = String::new();
    conn.read_line(&mut line).await.unwrap();
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("status line: {line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        conn.read_line(&mut line).await.unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').unwrap();
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let find = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    let chunked = find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    if chunked {
        loop {
            line.clear();
            conn.read_line(&mut line).await.unwrap();
            let size = usize::from_str_radix(line.trim_end(), 16)
                .unwrap_or_else(|_| panic!("chunk size line: {line:?}"));
            let mut data = vec![0; size + 2];
            conn.read_exact(&mut data).await.unwrap();
            assert_eq!(&data[size..], b"\r\n", "chunk framing");
            if size == 0 {
                break;
            }
            body.extend_from_slice(&data[..size]);
        }
    } else {
        let len: usize = find("content-length")
            .expect("a buffered answer has a length")
            .parse()
            .unwrap();
        body.resize(len, 0);
        conn.read_exact(&mut body).await.unwrap();
    }
    Wire {
        status,
        headers,
        body,
        chunked,
    }
}

fn chat(stream: bool, word: &str) -> String {
    serde_json::json!({
        "model": "chat-model",
        "stream": stream,
        "messages": [{"role": "user", "content": word}]
    })
    .to_string()
}

async fn many_requests_on_one_connection(host_args: &[&str]) {
    // The upstream answers by prompt: JSON, a stream in one piece, or events 5 ms apart.
    let up = Mock::with(|rec, _| {
        let word = rec.body["messages"][0]["content"].as_str().unwrap_or("");
        let events = ["one", "two", "three"].iter().map(|w| chunk(w)).collect();
        match word {
            "burst" => Script::SseAtOnce(events),
            "spaced" => Script::Sse {
                events,
                gap_ms: 5,
                end: SseEnd::Done,
            },
            _ => Script::ok("buffered answer"),
        }
    })
    .await;
    let policy = policy_for(&[("alpha", &up, "DE", "")], "");
    let m = Meridian::start_with(Some(&policy), host_args).await;
    let addr = m.at("").trim_start_matches("http://").to_string();
    let mut conn = BufReader::new(TcpStream::connect(&addr).await.unwrap());

    let mut ids = Vec::new();
    for round in 0..3 {
        for (what, path, body) in [
            ("buffered", "/v1/chat/completions", chat(false, "plain")),
            (
                "stream in one piece",
                "/v1/chat/completions",
                chat(true, "burst"),
            ),
            (
                "stream over time",
                "/v1/chat/completions",
                chat(true, "spaced"),
            ),
            ("refused", "/v1/chat/completions", "{not json".to_string()),
            ("not found", "/v1/nowhere", "{}".to_string()),
        ] {
            let w = tokio::time::timeout(Duration::from_secs(20), exchange(&mut conn, path, &body))
                .await
                .unwrap_or_else(|_| panic!("round {round}, {what}: no complete answer"));
            let text = String::from_utf8_lossy(&w.body).to_string();
            match what {
                "buffered" => {
                    assert_eq!(w.status, 200, "{what}: {text}");
                    assert!(!w.chunked, "{what}: framed by its length");
                    assert_eq!(w.header("content-length"), Some(&*w.body.len().to_string()));
                    let v: serde_json::Value = serde_json::from_slice(&w.body).unwrap();
                    assert_eq!(v["choices"][0]["message"]["content"], "buffered answer");
                }
                "stream in one piece" | "stream over time" => {
                    assert_eq!(w.status, 200, "{what}: {text}");
                    assert!(w.chunked, "{what}: a stream is chunked");
                    assert_eq!(w.header("content-length"), None);
                    assert!(text.ends_with("data: [DONE]\n\n"), "{what}: {text}");
                    for word in ["one", "two", "three"] {
                        assert!(text.contains(&format!("\"content\":\"{word}\"")), "{text}");
                    }
                }
                "refused" => {
                    assert_eq!(w.status, 400, "{what}: {text}");
                    assert!(!w.chunked);
                    let v: serde_json::Value = serde_json::from_slice(&w.body).unwrap();
                    assert_eq!(v["error"]["code"], "invalid_json", "{text}");
                }
                _ => {
                    assert_eq!(w.status, 404, "{what}: {text}");
                    assert!(!w.chunked);
                }
            }
            ids.push(w.header("x-request-id").unwrap().to_string());
        }
    }
    // Every request on the connection logged its line, streams with their outcome. (The host
    // stops a component once its response has ended, as Spin does, so a line written after
    // the end would be missing here.)
    for id in &ids {
        let line = m.log_for(id).await;
        if line["stream_outcome"].is_string() {
            assert_eq!(line["stream_outcome"], "done", "{line}");
        }
    }
    assert_eq!(up.requests().len(), 9, "three upstream calls per round");
}

#[tokio::test]
async fn many_requests_on_one_connection_with_spin_sockets() {
    many_requests_on_one_connection(&[]).await;
}

#[tokio::test]
async fn many_requests_on_one_connection_with_tcp_nodelay() {
    many_requests_on_one_connection(&["--tcp-nodelay"]).await;
}
