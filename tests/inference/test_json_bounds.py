"""Digit limits for generated JSON numbers (issue 25 item 6), with the real SmolLM2
tokenizer and grammars compiled the way requests compile them: every JSON path
(``json_schema``, ``json_object``, a tool's ``%json`` in Lark) refuses a runaway fraction
and keeps ordinary numbers, and every answer still validates against the schema sent."""

from __future__ import annotations

import asyncio
import json

import jsonschema
import pytest

from inference.constraints import GrammarSpec, json_schema_spec, lark_json, lark_string
from inference.json_bounds import MAX_DIGITS, MAX_FRACTION_DIGITS, bounded

from .helpers import collect, ids_of, req, run, text_of

ORDINARY = ["1.5", "-3", "67.75", "0", "-0.5", "25000000000", "0.0000000001", "123456.123456789",
            "12345.1234567891", "999999999999999", "-999999999999999"]
RUNAWAY = ["1.718750000000000000000000000000", "1.12345678901", "123456.1234567891",
           "1000000000000000", "2.5e10"]


def grammar_of(smol, spec: GrammarSpec):
    return run(smol.compile_grammar(spec, timeout_s=10.0))


def accepts(smol, grammar, text: str) -> bool:
    """Whether the tokens of ``text`` are all allowed and the grammar can end after them."""
    m = grammar.matcher()
    return all(m.advance(t) for t in smol.encode(text)) and m.can_end()


@pytest.mark.model
def test_number_refuses_runaway_fractions_and_keeps_ordinary_numbers(smol):
    grammar = grammar_of(smol, json_schema_spec({"type": "number"}, param="schema"))
    assert {n: accepts(smol, grammar, n) for n in ORDINARY} == {n: True for n in ORDINARY}
    assert {n: accepts(smol, grammar, n) for n in RUNAWAY} == {n: False for n in RUNAWAY}
    # ... wherever the number sits, and with the schema's own bounds still in force
    schema = {"type": "object", "properties": {"x": {"type": "number", "minimum": 0, "maximum": 100}},
              "required": ["x"]}
    grammar = grammar_of(smol, json_schema_spec(schema, param="schema"))
    assert accepts(smol, grammar, '{"x": 67.75}') and accepts(smol, grammar, '{"x": 100}')
    assert not accepts(smol, grammar, '{"x": 67.750000000000000000}')
    assert not accepts(smol, grammar, '{"x": -1}') and not accepts(smol, grammar, '{"x": 100.5}')


@pytest.mark.model
def test_integers_and_nullable_numbers(smol):
    grammar = grammar_of(smol, json_schema_spec({"type": "integer"}, param="schema"))
    assert accepts(smol, grammar, "-" + "9" * MAX_DIGITS) and accepts(smol, grammar, "42")
    assert not accepts(smol, grammar, "1" + "0" * MAX_DIGITS) and not accepts(smol, grammar, "1.0")
    nullable = grammar_of(smol, json_schema_spec({"type": ["number", "null"]}, param="schema"))
    assert accepts(smol, nullable, "null") and accepts(smol, nullable, "2.25")
    assert not accepts(smol, nullable, '"2.25"') and not accepts(smol, nullable, "2." + "5" * 20)
    # a schema that asks for bigger numbers than the limits keeps them
    big = grammar_of(smol, json_schema_spec({"type": "integer", "minimum": 1e16}, param="schema"))
    assert accepts(smol, big, "10000000000000000") and not accepts(smol, big, "42")


@pytest.mark.model
def test_any_value_positions_bound_numbers_at_any_depth(smol):
    """json_object mode's schema, ``{}`` and ``true`` allow any JSON value: its numbers
    get the same limits, at any depth."""
    for schema in ({"type": "object"}, {"type": "object", "additionalProperties": True},
                   {"type": "object", "additionalProperties": {}}):
        grammar = grammar_of(smol, json_schema_spec(schema, param="schema"))
        assert accepts(smol, grammar, '{"a": [1, {"b": 1.5, "c": null}], "d": "x", "e": true}')
        assert not accepts(smol, grammar, '{"a": [1, {"b": 1.12345678901}]}')
        assert not accepts(smol, grammar, '{"a": 2.' + "0" * 30 + "}")
    items = grammar_of(smol, json_schema_spec({"type": "array"}, param="schema"))
    assert accepts(smol, items, '[1, "x", [2.5]]') and not accepts(smol, items, "[[2." + "5" * 12 + "]]")


@pytest.mark.model
def test_tool_grammars_bound_numbers(smol):
    """Tools embed their argument schemas in Lark with ``lark_json``: bounded too."""
    params = {"type": "object", "properties": {"celsius": {"type": "number"}}, "required": ["celsius"]}
    lark = f"start: {lark_string('<call>')} {lark_json(params)} {lark_string('</call>')}"
    grammar = grammar_of(smol, GrammarSpec("lark", lark, "tools"))
    assert accepts(smol, grammar, '<call>{"celsius": 21.5}</call>')
    assert not accepts(smol, grammar, '<call>{"celsius": 21.5000000000000000}</call>')
    # an open object: the recursive any-value definition inside %json
    lark = f"start: {lark_string('<call>')} {lark_json({'type': 'object'})} {lark_string('</call>')}"
    grammar = grammar_of(smol, GrammarSpec("lark", lark, "tools"))
    assert accepts(smol, grammar, '<call>{"a": {"b": [21.5]}}</call>')
    assert not accepts(smol, grammar, '<call>{"a": {"b": [21.5000000000000000]}}</call>')


@pytest.mark.model
def test_max_length_and_max_items_are_enforced(smol):
    """llguidance enforces both; checked here so a change of library shows."""
    schema = {"type": "object", "properties": {
        "s": {"type": "string", "maxLength": 5}, "a": {"type": "array", "items": {"type": "integer"}, "maxItems": 2}},
        "required": ["s", "a"]}
    grammar = grammar_of(smol, json_schema_spec(schema, param="schema"))
    assert accepts(smol, grammar, '{"s": "abcde", "a": [1, 2]}')
    assert accepts(smol, grammar, '{"s": "ab\\ncd", "a": []}')  # an escape is one character
    assert not accepts(smol, grammar, '{"s": "abcdef", "a": [1]}')
    assert not accepts(smol, grammar, '{"s": "a", "a": [1, 2, 3]}')


@pytest.mark.model
def test_sampled_answers_validate_against_the_schema_sent(smol):
    schema = {"type": "object", "properties": {
        "country": {"type": "string", "maxLength": 20},
        "population_millions": {"type": "number"},
        "ratio": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 1},
        "scores": {"type": "array", "items": {"type": "number"}, "maxItems": 3},
        "facts": {"type": "object"}},
        "required": ["country", "population_millions", "ratio", "scores", "facts"]}
    grammar = grammar_of(smol, json_schema_spec(schema, param="schema"))
    prompt = smol.render_chat([{"role": "user", "content": "Describe France as JSON."}])

    async def many():
        requests = [req(prompt, rid=f"n{seed}", n=3, max_tokens=90, temperature=1.0, seed=seed) for seed in (3, 4)]
        return await asyncio.gather(*(collect(smol, type(r)(r.request_id, r.prompt_token_ids, r.sampling, r.n, grammar))
                                      for r in requests))

    stopped = 0
    for out in run(many()):
        for deltas in out.values():
            if deltas[-1].finish_reason != "stop":
                continue
            answer = json.loads(text_of(deltas), parse_float=_Number, parse_int=_Number)
            jsonschema.validate(json.loads(text_of(deltas)), schema)
            for number in _numbers(answer):
                whole, _, fraction = number.lstrip("-").partition(".")
                assert len(fraction) <= MAX_FRACTION_DIGITS and len(whole + fraction) <= MAX_DIGITS, number
            stopped += 1
    assert stopped >= 3


@pytest.mark.model
def test_the_issue_case_ends_within_80_tokens_at_temperature_0(smol):
    """The issue's schema at temperature 0: without the limits its number ran on until max_tokens."""
    schema = {"type": "object", "properties": {
        "country": {"type": "string"}, "capital": {"type": "string"}, "population_millions": {"type": "number"}},
        "required": ["country", "capital", "population_millions"], "additionalProperties": False}
    grammar = grammar_of(smol, json_schema_spec(schema, param="schema"))
    r = req(smol.render_chat([{"role": "user", "content": "Tell me about France."}]), max_tokens=80, temperature=0)
    out = run(collect(smol, type(r)(r.request_id, r.prompt_token_ids, r.sampling, 1, grammar)))
    assert out[0][-1].finish_reason == "stop" and len(ids_of(out[0])) <= 80
    jsonschema.validate(json.loads(text_of(out[0])), schema)


def test_rewrite_keeps_what_the_schema_says():
    """The rewrite only adds constraints, next to the schema's own (no model needed)."""
    schema = {"type": "object", "properties": {
        "n": {"type": "number", "minimum": 0, "anyOf": [{"maximum": 5}, {"minimum": 10}]},
        "e": {"enum": [1.12345678901234567, 2]},
        "m": {"type": "number", "multipleOf": 0.25},
        "i": {"type": "integer", "maximum": 7},
        "not": {"not": {"type": "number"}}},
        "$defs": {"gpt3dev_json_value": {"type": "string"}}}
    out = bounded(schema)
    n = out["properties"]["n"]
    assert n["minimum"] == 0 and n["anyOf"] == schema["properties"]["n"]["anyOf"] and "anyOf" in n["allOf"][0]
    assert out["properties"]["e"] == schema["properties"]["e"]  # literal data
    assert out["properties"]["m"] == {"type": "number", "multipleOf": 0.25,
                                      "minimum": -(10**MAX_DIGITS - 1), "maximum": 10**MAX_DIGITS - 1}
    assert out["properties"]["i"] == {"type": "integer", "maximum": 7, "minimum": -(10**MAX_DIGITS - 1)}
    assert out["properties"]["not"]["not"] == {"type": "number"}  # bounding inside `not` would widen it
    assert out["$defs"]["gpt3dev_json_value"] == {"type": "string"}  # the user's name is kept
    assert out["additionalProperties"] == {"$ref": "#/$defs/gpt3dev_json_value_2"}
    assert schema["properties"]["m"] == {"type": "number", "multipleOf": 0.25}  # not modified in place


class _Number(str):
    """A JSON number as written."""


def _numbers(value):
    if isinstance(value, _Number):
        yield value
    elif isinstance(value, (dict, list)):
        for item in value.values() if isinstance(value, dict) else value:
            yield from _numbers(item)
