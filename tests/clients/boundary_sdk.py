"""The official OpenAI and Anthropic Python SDKs asking providers to keep, fetch, run or send on
something, through Meridian. MERIDIAN_MODE=deny: the policy grants none of it, so each request is
refused before it reaches a provider (403 naming the field and the grant, or 400 for an unknown
field). MERIDIAN_MODE=grant: the policy grants each capability to one provider, so each request
is served there. tests/e2e_boundary.rs checks what each recording upstream received. Exits
non-zero on the first failure.
"""

import os
import sys

import anthropic
import openai

URL = os.environ["MERIDIAN_URL"]
MODE = os.environ["MERIDIAN_MODE"]
oa = openai.OpenAI(base_url=URL + "/v1", api_key="sk-app", max_retries=0, timeout=30)
an = anthropic.Anthropic(base_url=URL, api_key="sk-app", max_retries=0, timeout=30)
HI = [{"role": "user", "content": "hi"}]


def check(name, cond, detail=""):
    if not cond:
        print(f"FAIL boundary ({MODE}) {name}: {detail}", file=sys.stderr)
        sys.exit(1)
    print(f"ok   boundary ({MODE}) {name}")


def only(provider, **more):
    return {"provider": {"only": [provider]}, **more}


def outcome(name, call, words):
    """Refused (deny) with each of `words` in the message, or served (grant)."""
    try:
        r = call()
    except (openai.PermissionDeniedError, anthropic.PermissionDeniedError) as e:
        msg = str(e)
        check(name, MODE == "deny" and all(w in msg for w in words), msg)
        return None
    check(name, MODE == "grant", f"served although not granted: {r}")
    return r


outcome(
    "openai sdk: store=True",
    lambda: oa.chat.completions.create(model="chat-model", messages=HI, store=True, extra_body=only("open")),
    ["`store`", "capabilities"],
)
outcome(
    "openai sdk: Azure data_sources as an extra body field",
    lambda: oa.chat.completions.create(
        model="chat-model", messages=HI,
        extra_body=only("azure", data_sources=[{"type": "azure_search", "parameters": {
            "endpoint": "https://search.example", "index_name": "hr",
            "authentication": {"type": "system_assigned_managed_identity"}}}]),
    ),
    ["`data_sources`"],
)
outcome(
    "anthropic sdk: mcp_servers with the mcp-client beta",
    lambda: an.beta.messages.create(
        model="chat-model", max_tokens=50, messages=HI, betas=["mcp-client-2025-04-04"],
        mcp_servers=[{"type": "url", "url": "https://mcp.example/sse", "name": "anywhere"}],
        extra_body=only("claude"),
    ),
    ["`mcp`"],
)
outcome(
    "anthropic sdk: the web fetch server tool",
    lambda: an.messages.create(
        model="chat-model", max_tokens=50, messages=HI,
        tools=[{"type": "web_fetch_20250910", "name": "web_fetch"}], extra_body=only("claude"),
    ),
    ["`web_fetch`"],
)
outcome(
    "openai sdk: a remote image for the self-hosted engine",
    lambda: oa.chat.completions.create(
        model="chat-model", extra_body=only("engine"),
        messages=[{"role": "user", "content": [
            {"type": "text", "text": "what is this"},
            {"type": "image_url", "image_url": {"url": "http://169.254.169.254/latest/meta-data/"}}]}],
    ),
    ["`remote_media`"],
)

# Whatever the grants: the same image inline is the client's own bytes, and a field Meridian does
# not know is refused by name.
r = oa.chat.completions.create(
    model="chat-model", extra_body=only("engine"),
    messages=[{"role": "user", "content": [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}],
)
check("openai sdk: an inline image is served", r.choices[0].message.content == "ok", r)
try:
    oa.chat.completions.create(model="chat-model", messages=HI, extra_body=only("open", frobnicate=1))
    check("openai sdk: an unknown field", False, "served")
except openai.BadRequestError as e:
    check("openai sdk: an unknown field", "`frobnicate`" in str(e) and "unknown_fields" in str(e), str(e))
