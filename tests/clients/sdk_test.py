"""Meridian called with the official OpenAI Python SDK, exactly as an app would.

Run by tests/e2e_clients.rs against the component in the real runtime and a mock upstream:
MERIDIAN_URL is the router, MERIDIAN_KEY a tenant's key. Exits non-zero on the first failure.
"""

import os
import sys

import openai

URL = os.environ["MERIDIAN_URL"] + "/v1"
KEY = os.environ["MERIDIAN_KEY"]
MESSAGES = [{"role": "user", "content": "Say hello"}]

client = openai.OpenAI(base_url=URL, api_key=KEY, max_retries=0, timeout=30)


def check(name, cond, detail=""):
    if not cond:
        print(f"FAIL python {name}: {detail}", file=sys.stderr)
        sys.exit(1)
    print(f"ok   python {name}")


# Chat, non-stream; the raw response shows Meridian's audit headers.
raw = client.chat.completions.with_raw_response.create(model="chat-model", messages=MESSAGES)
chat = raw.parse()
check("chat", chat.choices[0].message.content == "Hello from the mock", chat)
check("chat audit headers", raw.headers.get("x-meridian-provider") == "alpha", dict(raw.headers))
check("chat usage", chat.usage is not None and chat.usage.total_tokens == 30, chat.usage)

# Chat, stream: the SDK's iterator yields the deltas.
stream = client.chat.completions.create(model="chat-model", messages=MESSAGES, stream=True)
text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
check("chat stream", text == "Hello from a stream", repr(text))

# Embeddings: the SDK asks for base64 by default and decodes it; floats on request.
emb = client.embeddings.create(model="embed-model", input="hello")
check("embeddings (base64)", emb.data[0].embedding == [0.5, -0.25, 1.0], emb.data[0].embedding)
emb = client.embeddings.create(model="embed-model", input="hello", encoding_format="float")
check("embeddings (float)", emb.data[0].embedding == [0.5, -0.25, 1.0], emb.data[0].embedding)

# Models list: the tenant's models.
ids = sorted(m.id for m in client.models.list())
check("models", ids == ["chat-model", "embed-model"], ids)

# Errors: the SDK's own exception types, carrying Meridian's message.
try:
    client.chat.completions.create(model="chat-modle", messages=MESSAGES)
    check("unknown model raises", False, "no exception")
except openai.NotFoundError as e:
    check("unknown model is NotFoundError (404)", e.status_code == 404, e)
    check("unknown model message", "Did you mean `chat-model`?" in e.message, e.message)
    check("unknown model code", e.code == "model_not_found", e.code)

# A key that matches no tenant is served as anonymous (the policy allows anonymous callers), and
# anonymous callers may not spend the operator's provider key.
bad = openai.OpenAI(base_url=URL, api_key="sk-not-a-tenant", max_retries=0, timeout=30)
try:
    bad.chat.completions.create(model="chat-model", messages=MESSAGES)
    check("unknown key raises", False, "no exception")
except openai.PermissionDeniedError as e:
    check("unknown key is anonymous: PermissionDeniedError (403)", e.status_code == 403, e)
    check("anonymous tenant reported", e.response.headers.get("x-meridian-tenant") == "anonymous", dict(e.response.headers))
    check("unknown key message", "may not spend" in e.message, e.message)

print("python: all passed")
