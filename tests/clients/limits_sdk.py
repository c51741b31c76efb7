"""The official OpenAI Python SDK against Meridian's own limits: its automatic retry waits the
`Retry-After` Meridian sends with a 429, and the answer's rate-limit headers are the ones the
SDK exposes for Meridian's limits (tests/e2e_limits.rs starts the node and checks the log)."""

import os
import time

import openai

client = openai.OpenAI(
    base_url=os.environ["MERIDIAN_URL"] + "/v1",
    api_key=os.environ["MERIDIAN_KEY"],
    max_retries=8,
    timeout=30,
)

started = time.monotonic()
raw = client.chat.completions.with_raw_response.create(
    model="chat-model",
    max_tokens=20,
    messages=[{"role": "user", "content": "hi"}],
)
took = time.monotonic() - started
completion = raw.parse()
assert completion.choices[0].message.content == "slow", completion

# The first attempt met the slot held by the test's other request: the SDK retried.
assert raw.retries_taken >= 1, raw.retries_taken
assert took >= 1.0, took
assert raw.headers.get("x-ratelimit-limit-requests") == "100", dict(raw.headers)
remaining = int(raw.headers.get("x-ratelimit-remaining-requests"))
assert 0 <= remaining < 100, remaining
assert raw.headers.get("x-ratelimit-reset-requests", "").endswith("s"), dict(raw.headers)
print(f"ok: {raw.retries_taken} retries in {took:.2f} s, {remaining} requests left")
