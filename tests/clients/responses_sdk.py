"""The official OpenAI Python SDK's Responses API through Meridian: `responses.create` and
`responses.stream`, passed through to a provider that serves the API (`native-model`) and
translated to chat for one that does not (`chat-model`); a follow-up by the id Meridian returned;
the ids that cannot be followed. tests/e2e_responses.rs starts Meridian and the recording mocks
and checks what reached them."""

import os

import openai

client = openai.OpenAI(
    base_url=os.environ["MERIDIAN_URL"] + "/v1",
    api_key=os.environ["MERIDIAN_KEY"],
    max_retries=0,
    timeout=30,
)

# Passed through: the provider's answer, under an id Meridian sealed.
first = client.responses.create(model="native-model", instructions="Be brief.", input="hi")
assert first.output_text == "native turn 0", first
assert first.id.startswith("resp_mrd1~native~app~resp_native_0~"), first.id

# The follow-up goes back to the provider that keeps the first turn.
second = client.responses.create(model="native-model", input="and then?", previous_response_id=first.id)
assert second.output_text == "native turn 1", second
fetched = client.responses.retrieve(second.id)
assert fetched.id == second.id and fetched.output_text == "native turn 1", fetched

# Streamed and passed through.
with client.responses.stream(model="native-model", input="stream it") as stream:
    kinds = [event.type for event in stream]
    final = stream.get_final_response()
assert kinds[0] == "response.created" and kinds[-1] == "response.completed", kinds
assert final.output_text == "native stream", final
assert final.id.startswith("resp_mrd1~native~"), final.id

# Translated to chat for an engine that does not serve the Responses API.
translated = client.responses.create(model="chat-model", input="hi")
assert translated.output_text == "translated", translated
assert translated.id.startswith("resp_mrd_"), translated.id
assert translated.usage.input_tokens == 10 and translated.usage.output_tokens == 20, translated.usage

with client.responses.stream(model="chat-model", input="stream it") as stream:
    deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
    final = stream.get_final_response()
assert "".join(deltas) == "Hello", deltas
assert final.output_text == "Hello", final

# What cannot be followed, and what is not granted.
try:
    client.responses.create(model="chat-model", input="x", previous_response_id=translated.id)
    raise AssertionError("a follow-up of a translated response was accepted")
except openai.BadRequestError as e:
    assert e.code == "response_not_stored", e
forged = first.id.replace("~native~", "~chatty~")
try:
    client.responses.create(model="native-model", input="x", previous_response_id=forged)
    raise AssertionError("a forged id was accepted")
except openai.BadRequestError as e:
    assert e.code == "invalid_response_id", e
try:
    client.responses.create(model="native-model", input="keep this", store=True)
    raise AssertionError("store=True went to a provider not granted retention")
except openai.PermissionDeniedError as e:
    assert e.code == "capability_not_granted", e
print("ok")
