"""The official OpenAI Python SDK against Meridian routing to an Anthropic provider: the app
keeps its OpenAI code; Meridian speaks Anthropic's Messages API upstream and answers in OpenAI's
shape, streams and tool calls included. Run by tests/e2e_wires.rs.
"""

import json
import os
import sys

import openai

client = openai.OpenAI(base_url=os.environ["MERIDIAN_URL"] + "/v1", api_key="sk-app", max_retries=0, timeout=30)


def check(name, cond, detail=""):
    if not cond:
        print(f"FAIL python {name}: {detail}", file=sys.stderr)
        sys.exit(1)
    print(f"ok   python {name}")


chat = client.chat.completions.create(
    model="chat-model",
    messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}],
)
check("chat", chat.choices[0].message.content == "Hello from Claude", chat)
check("chat finish", chat.choices[0].finish_reason == "stop", chat)
check("chat usage", chat.usage.prompt_tokens == 12 and chat.usage.completion_tokens == 4, chat.usage)

stream = client.chat.completions.create(
    model="chat-model",
    messages=[{"role": "user", "content": "Say hello"}],
    stream=True,
    stream_options={"include_usage": True},
)
text, usage, finish = "", None, None
for c in stream:
    if c.choices:
        text += c.choices[0].delta.content or ""
        finish = c.choices[0].finish_reason or finish
    if c.usage:
        usage = c.usage
check("chat stream", text == "Hello from a Claude stream", repr(text))
check("chat stream finish", finish == "stop", finish)
check("chat stream usage", usage is not None and usage.completion_tokens == 6, usage)

tools = [{"type": "function", "function": {"name": "weather", "description": "Weather in a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
chat = client.chat.completions.create(
    model="chat-model", messages=[{"role": "user", "content": "Weather in Paris?"}], tools=tools, tool_choice="auto"
)
call = chat.choices[0].message.tool_calls[0]
check("tool call", call.function.name == "weather" and json.loads(call.function.arguments) == {"city": "Paris"}, chat)
check("tool call finish", chat.choices[0].finish_reason == "tool_calls", chat)

# A field Anthropic's API cannot take: the SDK's own BadRequestError, naming it.
try:
    client.chat.completions.create(model="chat-model", messages=[{"role": "user", "content": "x"}], logprobs=True)
    check("unsupported field refused", False, "no error")
except openai.BadRequestError as e:
    check("unsupported field refused", "logprobs" in str(e), str(e))
print("all ok")
