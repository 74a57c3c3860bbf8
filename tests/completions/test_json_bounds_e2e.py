"""Issue 25 item 6 over real HTTP with SmolLM2 and the openai SDK unchanged: a
``number`` field under ``response_format`` no longer runs away as ``127.1788888...``
until ``max_tokens``; ``parse()`` finishes, and the answer has the digits a double holds."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel

pytestmark = [pytest.mark.e2e, pytest.mark.model]

MODEL = "SmolLM2-135M-Instruct"


class Country(BaseModel):
    country: str
    capital: str
    population_millions: float


def test_sdk_parse_with_a_number_finishes_within_80_tokens(openai_client):
    # Without digit limits SmolLM2 wrote "population_millions": 127.178888888888...
    # until max_tokens and the SDK raised LengthFinishReasonError; now 127.1788888888.
    completion = openai_client.chat.completions.parse(
        model=MODEL, messages=[{"role": "user", "content": "Tell me about France."}],
        response_format=Country, max_tokens=80, temperature=0,
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "stop" and completion.usage.completion_tokens <= 80
    assert isinstance(choice.message.parsed, Country)
    number = json.loads(choice.message.content, parse_float=str)["population_millions"]
    whole, _, fraction = str(number).lstrip("-").partition(".")
    assert len(fraction) <= 10 and len(whole + fraction) <= 15, number

