"""The official Anthropic Python SDK against Meridian, as an app built on it calls: the base URL
set to Meridian. MERIDIAN_URL is the router; tests/e2e_wires.rs runs this once per provider wire
behind it, MERIDIAN_ONLY naming the provider (sent in Meridian's `provider` object through
`extra_body`, as the SDK has no such field). Exits non-zero on the first failure.
"""

import os
import sys

import anthropic

client = anthropic.Anthropic(base_url=os.environ["MERIDIAN_URL"], api_key="sk-app", max_retries=0, timeout=30)
WIRE = os.environ["MERIDIAN_WIRE"]
ONLY = {"provider": {"only": [os.environ["MERIDIAN_ONLY"]]}}


def check(name, cond, detail=""):
    if not cond:
        print(f"FAIL anthropic sdk ({WIRE}) {name}: {detail}", file=sys.stderr)
        sys.exit(1)
    print(f"ok   anthropic sdk ({WIRE}) {name}")


msg = client.messages.create(
    model="chat-model", max_tokens=100, system="Be brief.",
    messages=[{"role": "user", "content": "Say hello"}], extra_body=ONLY,
)
check("message", msg.content[0].type == "text" and msg.content[0].text == "Hello there", msg)
check("stop reason", msg.stop_reason == "end_turn", msg.stop_reason)
check("usage", msg.usage.output_tokens == 4, msg.usage)

with client.messages.stream(
    model="chat-model", max_tokens=100, messages=[{"role": "user", "content": "Say hello"}], extra_body=ONLY,
) as stream:
    text = "".join(stream.text_stream)
    final = stream.get_final_message()
check("messages.stream text", text == "Hello from a stream", repr(text))
check("messages.stream final", final.stop_reason == "end_turn" and final.content[0].text == text, final)

tools = [{"name": "weather", "description": "Weather in a city",
          "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
msg = client.messages.create(
    model="chat-model", max_tokens=100, tools=tools,
    messages=[{"role": "user", "content": "Weather in Paris?"}], extra_body=ONLY,
)
use = [b for b in msg.content if b.type == "tool_use"]
check("tool use", len(use) == 1 and use[0].name == "weather" and use[0].input == {"city": "Paris"}, msg)
check("tool use stop", msg.stop_reason == "tool_use", msg.stop_reason)

# A stream that fails after its first byte raises the SDK's own error type.
try:
    with client.messages.stream(
        model="chat-model", max_tokens=100, messages=[{"role": "user", "content": "fail midway"}], extra_body=ONLY,
    ) as stream:
        for _ in stream.text_stream:
            pass
    check("error mid-stream", False, "no error raised")
except anthropic.APIStatusError as e:
    check("error mid-stream", "fail" in str(e).lower() or "broke" in str(e).lower() or "error" in str(e).lower(), repr(e))

# An unknown model: the SDK's NotFoundError.
try:
    client.messages.create(model="no-such-model", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    check("unknown model", False, "no error raised")
except anthropic.NotFoundError as e:
    check("unknown model", "no-such-model" in str(e), str(e))
print("all ok")
