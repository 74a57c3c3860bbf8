"""Grammar-constrained decoding with the real SmolLM2-135M-Instruct: every answer that
ends with ``stop`` matches its grammar, whatever the seed, n, logprobs or batch."""

from __future__ import annotations

import asyncio
import json
import re

import jsonschema
import pytest

from inference.constraints import GrammarSpec, json_schema_spec
from inference.errors import InvalidInput

from ..structured_schemas import PERSON, SCHEMAS
from .helpers import collect, ids_of, req, run, text_of

pytestmark = pytest.mark.model

ASK = [{"role": "user", "content": "Describe a person as JSON."}]


def compile_(smol, spec: GrammarSpec, timeout_s: float = 10.0):
    return run(smol.compile_grammar(spec, timeout_s=timeout_s))


@pytest.fixture(scope="module")
def ask(smol):
    return smol.render_chat(ASK)


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_sampled_answers_validate(smol, ask, name):
    schema = SCHEMAS[name]
    grammar = compile_(smol, json_schema_spec(schema, param="schema"))

    async def many():
        requests = [
            req(ask, rid=f"s{seed}", n=3, max_tokens=100, temperature=1.0, seed=seed) for seed in (1, 2)
        ]
        requests = [type(r)(r.request_id, r.prompt_token_ids, r.sampling, r.n, grammar) for r in requests]
        return await asyncio.gather(*(collect(smol, r) for r in requests))

    stopped = 0
    for out in run(many()):
        assert len(out) == 3
        for deltas in out.values():
            if deltas[-1].finish_reason == "stop":
                jsonschema.validate(json.loads(text_of(deltas)), schema)
                stopped += 1
            else:
                assert deltas[-1].finish_reason == "length" and len(ids_of(deltas)) == 100
    assert stopped >= 3  # most of the 6 answers end within 100 tokens


def test_unconstrained_rows_untouched_and_seeds_batch_invariant(smol, ask):
    grammar = compile_(smol, json_schema_spec(PERSON, param="schema"))
    plain = req(ask, rid="plain", max_tokens=24, temperature=0)
    seeded = req(ask, rid="c", n=2, max_tokens=40, temperature=0.8, seed=7)
    constrained = type(seeded)("c", seeded.prompt_token_ids, seeded.sampling, 2, grammar)
    alone_plain = run(collect(smol, plain))
    alone_constrained = run(collect(smol, constrained))

    async def together():
        return await asyncio.gather(collect(smol, plain), collect(smol, constrained))

    both = run(together())
    assert text_of(both[0][0]) == text_of(alone_plain[0]) and not text_of(alone_plain[0]).startswith("{")
    assert [text_of(both[1][i]) for i in (0, 1)] == [text_of(alone_constrained[i]) for i in (0, 1)]
    assert all(text_of(alone_constrained[i]).startswith('{"name": "') for i in (0, 1))


def test_choice_regex_and_logprobs_after_mask(smol, ask):
    choice = compile_(smol, GrammarSpec("choice", json.dumps(["alpha", "beta", "gamma"])))
    r = req(ask, max_tokens=10, temperature=0, logprobs=5)
    out = run(collect(smol, type(r)("x", r.prompt_token_ids, r.sampling, 1, choice)))
    assert text_of(out[0]) in {"alpha", "beta", "gamma"} and out[0][-1].finish_reason == "stop"
    first = out[0][0].logprobs[0]
    # after the mask: every alternative can start a choice, and they share all the mass
    assert first.top and all(any(c.startswith(alt.token) for c in ("alpha", "beta", "gamma")) for alt in first.top)
    assert sum(2.718281828 ** alt.logprob for alt in first.top) == pytest.approx(1.0, abs=1e-3)

    regex = compile_(smol, GrammarSpec("regex", r"[0-9]{3}-[a-z]{2}"))
    r = req(ask, n=3, max_tokens=20, temperature=1.0, seed=3)
    out = run(collect(smol, type(r)("y", r.prompt_token_ids, r.sampling, 3, regex)))
    for deltas in out.values():
        assert re.fullmatch(r"[0-9]{3}-[a-z]{2}", text_of(deltas)) and deltas[-1].finish_reason == "stop"


def test_max_tokens_cut_is_length_and_stop_strings_apply(smol, ask):
    grammar = compile_(smol, json_schema_spec(PERSON, param="schema"))
    r = req(ask, max_tokens=5, temperature=0)
    out = run(collect(smol, type(r)("z", r.prompt_token_ids, r.sampling, 1, grammar)))
    assert out[0][-1].finish_reason == "length" and len(ids_of(out[0])) == 5
    r = req(ask, max_tokens=60, temperature=0, stop=('"age"',))
    out = run(collect(smol, type(r)("z", r.prompt_token_ids, r.sampling, 1, grammar)))
    assert out[0][-1].finish_reason == "stop" and text_of(out[0]).startswith('{"name": ') and '"age"' not in text_of(out[0])


def test_lark_and_gbnf_grammars(smol, ask):
    lark = compile_(smol, GrammarSpec("lark", 'start: "The answer is " NUM "."\nNUM: /[1-9][0-9]?/'))
    gbnf = compile_(smol, GrammarSpec("lark", 'root ::= "yes" | "no"'))
    for grammar, pattern in ((lark, r"The answer is [1-9][0-9]?\."), (gbnf, r"yes|no")):
        r = req(ask, max_tokens=12, temperature=0)
        out = run(collect(smol, type(r)("g", r.prompt_token_ids, r.sampling, 1, grammar)))
        assert re.fullmatch(pattern, text_of(out[0])) and out[0][-1].finish_reason == "stop"


def test_compile_errors_name_the_field(smol):
    cases = [
        (json_schema_spec({"type": "object", "properties": {"a": {"not": {"type": "string"}}}}, param="p1"), "not"),
        (json_schema_spec({"type": "strin"}, param="p2"), "strin"),
        (GrammarSpec("regex", "[0-9]+(", param="p3"), "regex"),
        (GrammarSpec("lark", "start: foo", param="p4"), "foo"),
    ]
    for spec, word in cases:
        with pytest.raises(InvalidInput) as err:
            compile_(smol, spec)
        assert err.value.param == spec.param and word in str(err.value)


def test_compile_is_cached_and_bounded_in_time(smol):
    schema = {"type": "object", "properties": {f"k{i}": {"type": "string", "pattern": "^[a-z]{3,9}@[a-z]{2,7}\\.(com|org)$"} for i in range(60)}}
    spec = json_schema_spec(schema, param="response_format.json_schema.schema")
    with pytest.raises(InvalidInput) as err:
        compile_(smol, spec, timeout_s=1e-4)
    assert err.value.param == "response_format.json_schema.schema" and "longer than" in str(err.value)
    assert not smol.constraints.cached(spec)
    grammar = compile_(smol, spec)
    assert smol.constraints.cached(spec)
    assert compile_(smol, spec, timeout_s=1e-9)._template is grammar._template  # a hit never waits


def test_objects_that_list_properties_get_no_others(smol):
    """As vLLM's xgrammar back-end: no invented keys, and the answer still validates."""
    open_schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    grammar = compile_(smol, json_schema_spec(open_schema, param="schema"))
    ok, extra = grammar.matcher(), grammar.matcher()
    assert all(ok.advance(t) for t in smol.encode('{"a": 1}')) and ok.can_end()
    assert not all(extra.advance(t) for t in smol.encode('{"a": 1, "b": 2}'))
    anything = compile_(smol, json_schema_spec({"type": "object", "additionalProperties": True, "properties": {}}, param="s"))
    m = anything.matcher()
    assert all(m.advance(t) for t in smol.encode('{"b": 2}')) and m.can_end()
