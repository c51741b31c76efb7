"""The official OpenAI Python SDK against Meridian's guards (tests/e2e_guards.rs starts the node
and the recording guards): a refused request is an error the SDK reads, with Meridian's code
and message; a stream an output guard cuts raises in the SDK after the text it cleared, and the
SDK never sees the rest."""

import json
import os

import openai

client = openai.OpenAI(
    base_url=os.environ["MERIDIAN_URL"] + "/v1",
    api_key="unused",
    max_retries=0,
    timeout=30,
    default_headers={"cf-ipcountry": "FR"},
)

# 1. The input guard refuses: a 422 the SDK raises as UnprocessableEntityError.
try:
    client.chat.completions.create(
        model="chat-model",
        messages=[{"role": "user", "content": "Please do the FORBIDDEN thing."}],
    )
    raise SystemExit("the refused request succeeded")
except openai.UnprocessableEntityError as e:
    assert e.status_code == 422, e.status_code
    assert e.code == "guardrail_refused", e.body
    assert "guard `classifier-de`" in e.message, e.message
    guards = e.response.headers["x-meridian-guards"]
    assert "classifier-de:refused:INJECTION" in guards and "moderation-us:skipped" in guards, guards

# 2. A clean request is served; the US guard was skipped, and the headers say so.
raw = client.chat.completions.with_raw_response.create(
    model="chat-model",
    messages=[{"role": "user", "content": "hello"}],
)
completion = raw.parse()
assert completion.choices[0].message.content, completion
guards = raw.headers["x-meridian-guards"]
assert "moderation-us:skipped" in guards and "classifier-de:passed" in guards, guards

# 3. A stream whose third window the output guard refuses: the SDK raises after the text of the
# two windows it cleared.
seen = ""
try:
    stream = client.chat.completions.create(
        model="chat-model",
        stream=True,
        messages=[{"role": "user", "content": "tell me a long story"}],
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            seen += chunk.choices[0].delta.content
    raise SystemExit("the cut stream ended cleanly")
except openai.APIError as e:
    assert "guardrail" in str(e.message) or "guard" in str(e.message), e.message
print(json.dumps({"seen": seen}))
