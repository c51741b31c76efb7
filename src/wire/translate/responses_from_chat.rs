//! OpenAI Responses shapes made from chat shapes, after OpenAI's API reference: a chat answer as
//! a Responses object, and a stream of chat chunks as the Responses API's semantic events
//! (`response.created`, `response.output_item.added`, `response.output_text.delta`, …,
//! `response.completed`), for a client of `/v1/responses` served by a provider that speaks only
//! chat (or Anthropic, whose answers the wire has already made chat). Pure.
//!
//! Nothing is stored anywhere on this path: the object says `store: false`, and its id
//! (`resp_mrd_…`) is one Meridian refuses to look up, saying to send the conversation instead.

use serde_json::{json, Map, Value};

/// What the Responses object repeats from the request.
#[derive(Debug, Clone, Default)]
pub struct Echo {
    /// The id of the response: `resp_mrd_` and the request id's safe characters.
    pub id: String,
    /// The model the client asked for.
    pub model: String,
    pub created_at: u64,
    pub request: Map<String, Value>,
}

impl Echo {
    pub fn new(
        request_id: &str,
        model: &str,
        created_at: u64,
        request: &Map<String, Value>,
    ) -> Echo {
        let safe: String = request_id
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
            .take(64)
            .collect();
        let mut echo = Map::new();
        for k in [
            "instructions",
            "max_output_tokens",
            "metadata",
            "parallel_tool_calls",
            "temperature",
            "text",
            "tool_choice",
            "tools",
            "top_p",
            "user",
            "reasoning",
        ] {
            if let Some(v) = request.get(k).filter(|v| !v.is_null()) {
                echo.insert(k.into(), v.clone());
            }
        }
        Echo {
            id: format!("resp_mrd_{safe}"),
            model: model.to_string(),
            created_at,
            request: echo,
        }
    }

    /// The Responses object, with these output items, status and usage.
    fn object(
        &self,
        status: &str,
        output: Vec<Value>,
        usage: Value,
        incomplete: Option<&str>,
    ) -> Value {
        let r = &self.request;
        json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": Value::Null,
            "incomplete_details": incomplete.map(|reason| json!({"reason": reason})),
            "instructions": r.get("instructions").cloned().unwrap_or(Value::Null),
            "max_output_tokens": r.get("max_output_tokens").cloned().unwrap_or(Value::Null),
            "metadata": r.get("metadata").cloned().unwrap_or(json!({})),
            "model": self.model,
            "output": output,
            "parallel_tool_calls": r.get("parallel_tool_calls").cloned().unwrap_or(Value::Bool(true)),
            "previous_response_id": Value::Null,
            "reasoning": r.get("reasoning").cloned().unwrap_or(json!({"effort": null, "summary": null})),
            "store": false,
            "temperature": r.get("temperature").cloned().unwrap_or(Value::Null),
            "text": r.get("text").cloned().unwrap_or(json!({"format": {"type": "text"}})),
            "tool_choice": r.get("tool_choice").cloned().unwrap_or(json!("auto")),
            "tools": r.get("tools").cloned().unwrap_or(json!([])),
            "top_p": r.get("top_p").cloned().unwrap_or(Value::Null),
            "truncation": "disabled",
            "usage": usage,
            "user": r.get("user").cloned().unwrap_or(Value::Null),
        })
    }
}

/// Chat `usage` as Responses `usage`.
pub fn usage_of(u: &Value) -> Value {
    if u.is_null() {
        return Value::Null;
    }
    let input = u["prompt_tokens"].as_u64().unwrap_or(0);
    let output = u["completion_tokens"].as_u64().unwrap_or(0);
    json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": u["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap_or(0)},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": u["completion_tokens_details"]["reasoning_tokens"].as_u64().unwrap_or(0)},
        "total_tokens": u["total_tokens"].as_u64().unwrap_or(input + output),
    })
}

/// Why a response stopped early, from chat's `finish_reason`.
fn incomplete(finish: Option<&str>) -> Option<&'static str> {
    match finish {
        Some("length") => Some("max_output_tokens"),
        Some("content_filter") => Some("content_filter"),
        _ => None,
    }
}

fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({
        "type": "message", "id": id, "status": status, "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    })
}

fn call_item(id: &str, call_id: &Value, name: &Value, arguments: &str, status: &str) -> Value {
    json!({
        "type": "function_call", "id": id, "call_id": call_id, "name": name,
        "arguments": arguments, "status": status,
    })
}

/// A whole chat completion as a Responses object.
pub fn response(v: &Value, echo: &Echo) -> Value {
    let choice = &v["choices"][0];
    let m = &choice["message"];
    let mut output = Vec::new();
    if let Some(t) = m["content"].as_str().filter(|t| !t.is_empty()) {
        output.push(message_item(&format!("msg_{}", echo.id), t, "completed"));
    }
    for (i, c) in m["tool_calls"].as_array().into_iter().flatten().enumerate() {
        output.push(call_item(
            &format!("fc_{}_{i}", echo.id),
            &c["id"],
            &c["function"]["name"],
            c["function"]["arguments"].as_str().unwrap_or("{}"),
            "completed",
        ));
    }
    let inc = incomplete(choice["finish_reason"].as_str());
    echo.object(
        if inc.is_some() {
            "incomplete"
        } else {
            "completed"
        },
        output,
        usage_of(&v["usage"]),
        inc,
    )
}

/// The most text and arguments a translated stream holds for its closing events (the
/// `…done` events and `response.completed` repeat what was streamed). Past it the stream ends
/// with `response.failed`, never a completion without its text.
pub const MAX_HELD_BYTES: usize = 16 * 1024 * 1024;

/// An item being streamed.
#[derive(Debug)]
enum Open {
    Text {
        index: u64,
        text: String,
    },
    Call {
        index: u64,
        tool: u64,
        call_id: Value,
        name: Value,
        args: String,
    },
}

/// Turns checked chat SSE lines (as the stream guard passes them on) into Responses events.
#[derive(Debug)]
pub struct StreamTranslator {
    echo: Echo,
    seq: u64,
    started: bool,
    open: Option<Open>,
    done_items: Vec<Value>,
    finish: Option<String>,
    usage: Value,
    ended: bool,
    /// Bytes of text and arguments held for the closing events.
    held: usize,
}

impl StreamTranslator {
    pub fn new(echo: Echo) -> StreamTranslator {
        StreamTranslator {
            echo,
            seq: 0,
            started: false,
            open: None,
            done_items: Vec::new(),
            finish: None,
            usage: Value::Null,
            ended: false,
            held: 0,
        }
    }

    /// Ends the response as failed, with this code and message.
    fn fail(&mut self, out: &mut Vec<u8>, code: &str, message: &str) {
        self.start(out);
        self.ended = true;
        let mut r = self.echo.object(
            "failed",
            std::mem::take(&mut self.done_items),
            usage_of(&self.usage),
            None,
        );
        r["error"] = json!({"code": code, "message": message});
        self.event(
            out,
            "error",
            json!({"code": code, "message": message, "param": null}),
        );
        self.event(out, "response.failed", json!({"response": r}));
    }

    fn event(&mut self, out: &mut Vec<u8>, kind: &str, mut data: Value) {
        data["type"] = Value::String(kind.to_string());
        data["sequence_number"] = Value::from(self.seq);
        self.seq += 1;
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\ndata: ");
        out.extend_from_slice(data.to_string().as_bytes());
        out.extend_from_slice(b"\n\n");
    }

    fn item_id(&self, index: u64) -> String {
        format!("item_{}_{index}", self.echo.id)
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let r = self.echo.object("in_progress", vec![], Value::Null, None);
        self.event(out, "response.created", json!({"response": r}));
        self.event(out, "response.in_progress", json!({"response": r}));
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        match self.open.take() {
            None => {}
            Some(Open::Text { index, text }) => {
                let id = self.item_id(index);
                self.event(out, "response.output_text.done", json!({"item_id": id, "output_index": index, "content_index": 0, "text": text, "logprobs": []}));
                self.event(out, "response.content_part.done", json!({"item_id": id, "output_index": index, "content_index": 0, "part": {"type": "output_text", "text": text, "annotations": []}}));
                let item = message_item(&id, &text, "completed");
                self.event(
                    out,
                    "response.output_item.done",
                    json!({"output_index": index, "item": item}),
                );
                self.done_items.push(item);
            }
            Some(Open::Call {
                index,
                call_id,
                name,
                args,
                ..
            }) => {
                let id = self.item_id(index);
                self.event(
                    out,
                    "response.function_call_arguments.done",
                    json!({"item_id": id, "output_index": index, "arguments": args}),
                );
                let item = call_item(&id, &call_id, &name, &args, "completed");
                self.event(
                    out,
                    "response.output_item.done",
                    json!({"output_index": index, "item": item}),
                );
                self.done_items.push(item);
            }
        }
    }

    fn next_index(&self) -> u64 {
        self.done_items.len() as u64
    }

    fn chunk(&mut self, v: &Value, out: &mut Vec<u8>) {
        self.start(out);
        if !v["usage"].is_null() {
            self.usage = v["usage"].clone();
        }
        for c in v["choices"].as_array().into_iter().flatten() {
            let d = &c["delta"];
            if let Some(t) = d["content"].as_str().filter(|t| !t.is_empty()) {
                if !matches!(self.open, Some(Open::Text { .. })) {
                    self.close(out);
                    let index = self.next_index();
                    let id = self.item_id(index);
                    let item = json!({"type": "message", "id": id, "status": "in_progress", "role": "assistant", "content": []});
                    self.event(
                        out,
                        "response.output_item.added",
                        json!({"output_index": index, "item": item}),
                    );
                    self.event(out, "response.content_part.added", json!({"item_id": id, "output_index": index, "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}));
                    self.open = Some(Open::Text {
                        index,
                        text: String::new(),
                    });
                }
                let index = match &mut self.open {
                    Some(Open::Text { index, text }) => {
                        text.push_str(t);
                        self.held += t.len();
                        *index
                    }
                    _ => 0,
                };
                let id = self.item_id(index);
                self.event(out, "response.output_text.delta", json!({"item_id": id, "output_index": index, "content_index": 0, "delta": t, "logprobs": []}));
            }
            for call in d["tool_calls"].as_array().into_iter().flatten() {
                let tool = call["index"].as_u64().unwrap_or(0);
                if !matches!(self.open, Some(Open::Call { tool: t, .. }) if t == tool) {
                    self.close(out);
                    let index = self.next_index();
                    let id = self.item_id(index);
                    let (call_id, name) = (call["id"].clone(), call["function"]["name"].clone());
                    let item = call_item(&id, &call_id, &name, "", "in_progress");
                    self.event(
                        out,
                        "response.output_item.added",
                        json!({"output_index": index, "item": item}),
                    );
                    self.open = Some(Open::Call {
                        index,
                        tool,
                        call_id,
                        name,
                        args: String::new(),
                    });
                }
                if let Some(a) = call["function"]["arguments"]
                    .as_str()
                    .filter(|a| !a.is_empty())
                {
                    let index = match &mut self.open {
                        Some(Open::Call { index, args, .. }) => {
                            args.push_str(a);
                            self.held += a.len();
                            *index
                        }
                        _ => 0,
                    };
                    let id = self.item_id(index);
                    self.event(
                        out,
                        "response.function_call_arguments.delta",
                        json!({"item_id": id, "output_index": index, "delta": a}),
                    );
                }
            }
            if let Some(f) = c["finish_reason"].as_str() {
                self.finish = Some(f.to_string());
            }
        }
    }

    fn complete(&mut self, out: &mut Vec<u8>) {
        self.start(out);
        self.close(out);
        let inc = incomplete(self.finish.as_deref());
        let r = self.echo.object(
            if inc.is_some() {
                "incomplete"
            } else {
                "completed"
            },
            std::mem::take(&mut self.done_items),
            usage_of(&self.usage),
            inc,
        );
        let kind = if inc.is_some() {
            "response.incomplete"
        } else {
            "response.completed"
        };
        self.event(out, kind, json!({"response": r}));
        self.ended = true;
    }

    /// Whole chat SSE lines in, Responses events out. `[DONE]` completes the response; an error
    /// event (the stream contract's own, or the upstream's) becomes `response.failed`, never a
    /// completion.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for data in crate::sse::lines(bytes).filter_map(crate::sse::data_of) {
            if self.ended {
                continue;
            }
            if data == b"[DONE]" {
                self.complete(&mut out);
                continue;
            }
            let Ok(v) = serde_json::from_slice::<Value>(data) else {
                continue;
            };
            if let Some(e) = v.get("error") {
                let code = e["code"]
                    .as_str()
                    .unwrap_or("upstream_stream_error")
                    .to_string();
                let message = e["message"]
                    .as_str()
                    .unwrap_or("the stream failed")
                    .to_string();
                self.fail(&mut out, &code, &message);
                continue;
            }
            self.chunk(&v, &mut out);
            if self.held > MAX_HELD_BYTES {
                self.fail(
                    &mut out,
                    "response_too_large",
                    "the answer is longer than Meridian holds for a translated stream",
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_longer_than_it_holds_fails_instead_of_completing() {
        let mut t = StreamTranslator::new(Echo::default());
        let piece = "x".repeat(1 << 20);
        let line = format!(
            "data: {}\n\n",
            json!({"choices": [{"index": 0, "delta": {"content": piece}}]})
        );
        let mut out = Vec::new();
        for _ in 0..(MAX_HELD_BYTES >> 20) + 1 {
            out.extend(t.feed(line.as_bytes()));
        }
        out.extend(t.feed(b"data: [DONE]\n\n"));
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("event: response.failed"));
        assert!(text.contains("response_too_large"));
        assert!(!text.contains("response.completed"));
    }
}
