"""The real client libraries, unchanged, against the real server and SmolLM2: LangChain's
``with_structured_output`` (each method), ``bind_tools`` and ``create_agent``'s
``response_format``, pydantic-ai's typed output, and instructor's modes."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel, Field

pytestmark = [pytest.mark.e2e, pytest.mark.model]

MODEL = "SmolLM2-135M-Instruct"


class City(BaseModel):
    """A city and its country."""

    name: str = Field(max_length=30)
    country: str = Field(max_length=30)


@pytest.fixture(scope="module")
def llm(live_server_url):
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(base_url=f"{live_server_url}/v1", api_key="not-needed", model=MODEL,
                      temperature=0, max_tokens=60, max_retries=0, timeout=300)


@pytest.mark.parametrize("method", [None, "json_schema", "function_calling"])
def test_langchain_with_structured_output_pydantic(llm, method):
    kwargs = {} if method is None else {"method": method}
    city = llm.with_structured_output(City, **kwargs).invoke("Which city is the capital of France?")
    assert isinstance(city, City) and city.name and city.country


def test_langchain_json_mode(llm):
    schema = {"title": "city", "description": "A city", "type": "object",
              "properties": {"name": {"type": "string"}}, "required": ["name"]}
    out = llm.with_structured_output(schema, method="json_mode", include_raw=True).invoke(
        "Answer in JSON: which city is the capital of France?")
    assert out["parsing_error"] is None and isinstance(out["parsed"], dict)


def test_langchain_bind_tools(llm):
    from langchain_core.tools import tool

    @tool
    def get_weather(city: str) -> str:
        """The weather in a city now."""
        return f"sunny in {city}"

    message = llm.bind_tools([get_weather], tool_choice="get_weather").invoke("What is the weather in Paris?")
    assert message.tool_calls and message.tool_calls[0]["name"] == "get_weather"
    assert isinstance(message.tool_calls[0]["args"]["city"], str)
    result = get_weather.invoke(message.tool_calls[0])  # a ToolMessage, fed back as history
    answer = llm.bind_tools([get_weather]).invoke(
        [("user", "What is the weather in Paris?"), message, result])
    assert answer.content or answer.tool_calls


# create_agent(response_format=...) and pydantic-ai's default output_type both ask for
# tool_choice "required" with parallel calls allowed, where SmolLM2 repeats its call
# until max_tokens: they get the calls before the first repeat.
def test_langchain_create_agent_response_format(llm):
    from langchain.agents import create_agent

    agent = create_agent(llm.model_copy(update={"max_tokens": 120}), tools=[], response_format=City)
    state = agent.invoke({"messages": [{"role": "user", "content": "Which city is the capital of France?"}]})
    city = state["structured_response"]
    assert isinstance(city, City) and city.name and city.country


def test_pydantic_ai_output_type(live_server_url):
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    provider = OpenAIProvider(base_url=f"{live_server_url}/v1", api_key="not-needed")
    agent = Agent(OpenAIChatModel(MODEL, provider=provider), output_type=City, retries=0)
    result = agent.run_sync("Which city is the capital of France?",
                            model_settings={"temperature": 0, "max_tokens": 120})
    assert isinstance(result.output, City) and result.output.name and result.output.country


@pytest.fixture(scope="module")
def instructor_client(live_server_url):
    import instructor
    from openai import OpenAI

    client = OpenAI(base_url=f"{live_server_url}/v1", api_key="not-needed", max_retries=0, timeout=300)
    return lambda mode: instructor.from_openai(client, mode=mode)


# instructor's JSON mode asks for any JSON object (json_object) and describes the model in
# the prompt: the server keeps that answer a JSON object, but SmolLM2-135M does not follow a
# schema it is only told about, so that mode is checked below for what the server promises.
@pytest.mark.parametrize("mode", ["TOOLS", "JSON_SCHEMA"])
def test_instructor_modes(instructor_client, mode):
    import instructor

    client = instructor_client(getattr(instructor.Mode, mode))
    city = client.chat.completions.create(
        model=MODEL, response_model=City, max_retries=0, temperature=0, max_tokens=80,
        messages=[{"role": "user", "content": "Which city is the capital of France?"}],
    )
    assert isinstance(city, City) and city.name and city.country


def test_instructor_json_mode_gets_a_json_object(instructor_client):
    import instructor
    from instructor.core.exceptions import InstructorRetryException

    client = instructor_client(instructor.Mode.JSON)
    try:
        city, completion = client.chat.completions.create_with_completion(
            model=MODEL, response_model=City, max_retries=0, temperature=0, max_tokens=80,
            messages=[{"role": "user", "content": "Which city is the capital of France?"}],
        )
    except InstructorRetryException as exc:  # the content is JSON, only not a City
        completion = exc.last_completion
    assert completion.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(completion.choices[0].message.content), dict)
