"""The OpenAI Agents SDK (openai-agents) running an agent with a function tool through
Meridian's /v1/responses, for each model in MERIDIAN_MODELS: the model asks for the tool, the
SDK runs it and sends its output back, the model answers; then a second user turn on the same
conversation (`to_input_list()`, function call and output items included). tests/e2e_responses.rs
serves each model from a different upstream (passed through, translated to chat, translated to
Anthropic) and checks what reached them."""

import asyncio
import os

from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled
from openai import AsyncOpenAI

set_tracing_disabled(True)
client = AsyncOpenAI(
    base_url=os.environ["MERIDIAN_URL"] + "/v1",
    api_key=os.environ["MERIDIAN_KEY"],
    max_retries=0,
    timeout=30,
)


@function_tool
def get_weather(city: str) -> str:
    """The weather now in a city."""
    return f"sunny in {city}"


async def main() -> None:
    for model in os.environ["MERIDIAN_MODELS"].split(","):
        agent = Agent(
            name="weather",
            instructions="Answer with the weather tool.",
            tools=[get_weather],
            model=OpenAIResponsesModel(model=model, openai_client=client),
        )
        first = await Runner.run(agent, "What is the weather in Oslo?")
        assert first.final_output == "It is sunny in Oslo.", (model, first.final_output)
        history = first.to_input_list()
        kinds = [i.get("type", "message") for i in history]
        assert "function_call" in kinds and "function_call_output" in kinds, (model, kinds)
        second = await Runner.run(agent, history + [{"role": "user", "content": "Thanks. And in Bergen?"}])
        assert second.final_output == "It is sunny in Bergen.", (model, second.final_output)
        print(f"ok: {model}")


asyncio.run(main())
