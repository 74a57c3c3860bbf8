"""Real clients that speak the Responses API, against the live server with SmolLM2: the
OpenAI Agents SDK (its default model is the Responses one), LangChain's ChatOpenAI with
``use_responses_api=True``, and the Codex CLI (``codex exec``)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.live_server import ROOT
from tests.responses.conftest import ALICE, MODEL

pytestmark = [pytest.mark.e2e, pytest.mark.model]

CODEX = ROOT / ".venv" / "codex" / "node_modules" / ".bin" / "codex"


def set_row_defaults(server, **defaults) -> dict:
    """Set the model row's sampling defaults in the server's database (read per request);
    returns the values they replaced, to put back."""
    columns = {f"default_{name}": value for name, value in defaults.items()}
    code = ("import json; from models_api.models import ModelEntry; "
            f"rows = ModelEntry.objects.filter(model_id={MODEL!r}); "
            f"print(json.dumps(rows.values({', '.join(map(repr, columns))}).get())); "
            f"rows.update(**{columns!r})")
    done = subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=ROOT, env=server.server.env,
                          check=True, capture_output=True, text=True, timeout=120)
    before = json.loads(done.stdout.strip().splitlines()[-1])
    return {name.removeprefix("default_"): value for name, value in before.items()}


def test_agents_sdk_runs_an_agent_that_calls_a_function_tool(responses_server):
    agents = pytest.importorskip("agents", reason="openai-agents is not installed (make install-dev)")
    from openai import AsyncOpenAI

    agents.set_tracing_disabled(True)  # no traces sent to OpenAI
    calls: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """Get the current weather in a city."""
        calls.append(city)
        return f"It is 22 degrees and sunny in {city}."

    client = AsyncOpenAI(base_url=f"{responses_server.base_url}/v1", api_key=ALICE, max_retries=0, timeout=300)
    agent = agents.Agent(
        name="weather",
        instructions="Answer questions about the weather with the get_weather tool, in one short sentence.",
        tools=[get_weather],
        model=agents.OpenAIResponsesModel(model=MODEL, openai_client=client),
        # The first turn must call the tool; the SDK then resets tool_choice to auto.
        # One call per turn: a small model otherwise repeats the call until max_tokens, and
        # the SDK treats an incomplete response as an error.
        model_settings=agents.ModelSettings(tool_choice="required", parallel_tool_calls=False, max_tokens=64,
                                            temperature=0),
    )
    result = asyncio.run(agents.Runner.run(agent, "What is the weather in Paris?", max_turns=4))
    assert calls, "the agent never called its tool"
    assert isinstance(result.final_output, str) and result.final_output.strip()
    kinds = [item.type for item in result.new_items]
    assert "tool_call_item" in kinds and "tool_call_output_item" in kinds
    assert kinds[-1] == "message_output_item"


def test_langchain_chat_openai_with_the_responses_api(responses_server):
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(model=MODEL, base_url=f"{responses_server.base_url}/v1", api_key=ALICE, use_responses_api=True,
                     max_tokens=8, temperature=0, max_retries=0, timeout=300)
    answer = llm.invoke("What is the capital of France?")
    assert "Paris" in answer.text
    assert answer.response_metadata.get("id", "").startswith("resp_")

    chunks = list(llm.stream("What is the capital of France?"))
    assert len(chunks) > 2
    assert "".join(chunk.text for chunk in chunks) == answer.text

    @tool
    def get_weather(city: str) -> str:
        """Get the current weather in a city."""
        return "sunny"

    longer = ChatOpenAI(model=MODEL, base_url=f"{responses_server.base_url}/v1", api_key=ALICE,
                        use_responses_api=True, max_tokens=40, temperature=0, max_retries=0, timeout=300)
    with_tools = longer.bind_tools([get_weather], tool_choice="get_weather", parallel_tool_calls=False)
    called = with_tools.invoke("What is the weather in Paris?")
    assert called.tool_calls and called.tool_calls[0]["name"] == "get_weather"
    assert isinstance(called.tool_calls[0]["args"]["city"], str)


@pytest.mark.skipif(not CODEX.exists(), reason=f"the Codex CLI is not installed at {CODEX} (make install-dev)")
def test_codex_exec_says_hi(responses_server, tmp_path):
    home = tmp_path / "codex-home"
    home.mkdir()
    (home / "config.toml").write_text(
        f'model = "{MODEL}"\n'
        # Codex's own instructions (thousands of tokens) stay; this asks the small model to be brief.
        'developer_instructions = "Reply with one short sentence."\n'
        'model_provider = "gpt3dev"\n'
        "[model_providers.gpt3dev]\n"
        'name = "gpt3dev"\n'
        f'base_url = "{responses_server.base_url}/v1"\n'
        'env_key = "GPT3DEV_API_KEY"\n'
        'wire_api = "responses"\n'
        "request_max_retries = 0\n"
        "stream_max_retries = 0\n"
        "stream_idle_timeout_ms = 900000\n"  # a turn's prompt takes this CPU minutes to read
    )
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "CODEX_HOME": str(home), "GPT3DEV_API_KEY": ALICE, "NO_COLOR": "1"}
    # Codex sends no max_output_tokens nor temperature: the registry row's defaults bound each
    # turn (a CPU is slow). Codex fails a turn that ends incomplete, so the bound leaves room for
    # a reply (a 45-token greeting here), and greedy decoding with a repetition penalty keeps the
    # small model from sampling its way into a loop ("I'm a new one. I'm a new one. ..." ran past
    # 64 tokens at the row's own temperature of 0.2).
    before = set_row_defaults(responses_server, max_tokens=96, temperature=0.0, repetition_penalty=1.2)
    try:
        result = subprocess.run(
            [str(CODEX), "exec", "--skip-git-repo-check", "--sandbox", "read-only", "-C", str(work), "Say hi"],
            env=env, capture_output=True, text=True, timeout=1500, stdin=subprocess.DEVNULL,
        )
    finally:
        set_row_defaults(responses_server, **before)
    log = Path(responses_server.server.log_path).read_text(errors="replace")
    assert result.returncode == 0, f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}\n{log[-2000:]}"
    assert "path=/v1/responses" in log  # the access log: Codex really called this server
