"""End to end: the OpenAI Agents SDK (`openai-agents`) running an agent with one function
tool through `/v1/responses` (`Runner.run_streamed`, its default Responses model), to
`echo` and to `anthropic` answered by a scripted upstream with Anthropic's real bytes."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")  # before the SDK reads it

from agents import Agent, ModelSettings, RunConfig, Runner, function_tool  # noqa: E402
from agents.models.multi_provider import MultiProvider  # noqa: E402
from openai import AsyncOpenAI  # noqa: E402
from openai.types.shared import Reasoning  # noqa: E402
from streamgate.app import create_app  # noqa: E402
from streamgate.providers.echo import EchoAdapter  # noqa: E402
from support import serve, settings  # noqa: E402
from wire_anthropic import text_block, thinking_block, tool_block, whole_stream  # noqa: E402
from wire_upstreams import providers_gateway  # noqa: E402

calls: list[str] = []


@function_tool
def get_weather(city: str) -> str:
    """The weather of a city."""
    calls.append(city)
    return f"sunny in {city}"


def run(url: str, model: str, prompt: str, **settings_: Any) -> tuple[str, list[str]]:
    """The agent's final output and the types of the items it streamed."""

    async def main() -> tuple[str, list[str]]:
        # Closed here, in its own loop: an unclosed client's `__del__` would close it later on
        # whichever loop runs then (another test's), where its connections' loop is gone.
        async with AsyncOpenAI(base_url=url + "/v1", api_key="sk-anything", max_retries=0) as client:
            return await run_agent(client)

    async def run_agent(client: AsyncOpenAI) -> tuple[str, list[str]]:
        # `<provider>/<model>` names: the SDK's MultiProvider takes a prefix it does not know
        # as part of the model id when asked to.
        config = RunConfig(
            model_provider=MultiProvider(openai_client=client, unknown_prefix_mode="model_id"), tracing_disabled=True
        )
        agent = Agent(
            name="weather",
            instructions="Answer with the tool.",
            model=model,
            tools=[get_weather],
            model_settings=ModelSettings(**settings_),
        )
        result = Runner.run_streamed(agent, input=prompt, run_config=config)
        kinds = [event.item.type async for event in result.stream_events() if event.type == "run_item_stream_event"]
        return str(result.final_output), kinds

    return asyncio.run(main())


def test_agent_with_a_tool_on_echo() -> None:
    calls.clear()
    with serve(create_app(settings(), {"echo": EchoAdapter(0)})) as url:
        output, kinds = run(url, "echo/echo", '/tool get_weather {"city": "Paris"}')
    assert calls == ["Paris"]
    assert kinds == ["tool_call_item", "tool_call_output_item", "message_output_item"]
    assert output == "get_weather returned: sunny in Paris"


def test_agent_with_a_tool_on_anthropic() -> None:
    """Reasoning shown as summaries, the call run by the agent, the answer after it; the
    second turn carries the call and its result to Anthropic as its own blocks."""
    calls.clear()
    with providers_gateway() as (url, upstream):
        upstream.script(
            b"".join(
                whole_stream(
                    thinking_block(0, ["The user wants ", "weather."]),
                    tool_block(1, "toolu_01A", "get_weather", ["", '{"city": "Oslo"}']),
                    stop_reason="tool_use",
                )
            ),
            b"".join(whole_stream(text_block(0, ["Oslo is ", "sunny."]))),
        )
        output, kinds = run(
            url, "anthropic/claude-sonnet-5-5", "Weather in Oslo?", reasoning=Reasoning(effort="low", summary="auto")
        )
        sent = [seen.json for seen in upstream.seen]
    assert calls == ["Oslo"] and output == "Oslo is sunny."
    assert kinds == ["reasoning_item", "tool_call_item", "tool_call_output_item", "message_output_item"]
    assert sent[0]["system"] == "Answer with the tool." and [t["name"] for t in sent[0]["tools"]] == ["get_weather"]
    second = sent[1]["messages"]
    assert second[1]["role"] == "assistant" and second[1]["content"][-1]["type"] == "tool_use"
    assert second[1]["content"][-1]["id"] == "toolu_01A"
    assert second[2]["content"][0]["type"] == "tool_result"
    assert json.loads(json.dumps(second[2]["content"][0]["content"])) == "sunny in Oslo"
