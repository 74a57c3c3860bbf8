"""Grammar-constrained decoding with the real SmolLM2-135M-Instruct: every answer that
ends with ``stop`` matches its grammar, whatever the seed, n, logprobs or batch."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import jsonschema
import numpy as np
import pytest

from inference.constraints import ConstraintCompiler, GrammarLimits, GrammarSpec, json_schema_spec, mask_words
from inference.errors import EngineOverloaded, InvalidInput

from ..hostile_grammars import AMBIGUOUS, optional_nulls, ref_chain, rule_chain
from ..structured_schemas import PERSON, SCHEMAS
from .helpers import assert_idle, collect, ids_of, req, run, text_of

pytestmark = pytest.mark.model

ASK = [{"role": "user", "content": "Describe a person as JSON."}]


def compile_(smol, spec: GrammarSpec, timeout_s: float = 10.0):
    return run(smol.compile_grammar(spec, timeout_s=timeout_s))


@pytest.fixture
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
    assert out[0][-1].finish_reason == "stop"
    assert text_of(out[0]).startswith('{"name": ') and '"age"' not in text_of(out[0])


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
    email = {"type": "string", "pattern": "^[a-z]{3,9}@[a-z]{2,7}\\.(com|org)$"}
    schema = {"type": "object", "properties": {f"k{i}": email for i in range(60)}}
    spec = json_schema_spec(schema, param="response_format.json_schema.schema")
    with pytest.raises(InvalidInput) as err:
        compile_(smol, spec, timeout_s=1e-4)
    assert err.value.param == "response_format.json_schema.schema" and "longer than" in str(err.value)
    # Remembered: a resend gets the same 400 at once and starts no compile.
    assert smol.constraints.cached(spec)
    with pytest.raises(InvalidInput) as again:
        compile_(smol, spec, timeout_s=60)
    assert str(again.value) == str(err.value)
    other = json_schema_spec(schema | {"title": "other"}, param="response_format.json_schema.schema")
    grammar = compile_(smol, other)
    assert smol.constraints.cached(other)
    assert compile_(smol, other, timeout_s=1e-9)._template is grammar._template  # a hit never waits


def test_objects_that_list_properties_get_no_others(smol):
    """As vLLM's xgrammar back-end: no invented keys, and the answer still validates."""
    open_schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    grammar = compile_(smol, json_schema_spec(open_schema, param="schema"))
    ok, extra = grammar.matcher(), grammar.matcher()
    assert all(ok.advance(t) for t in smol.encode('{"a": 1}')) and ok.can_end()
    assert not all(extra.advance(t) for t in smol.encode('{"a": 1, "b": 2}'))
    open_object = {"type": "object", "additionalProperties": True, "properties": {}}
    anything = compile_(smol, json_schema_spec(open_object, param="s"))
    m = anything.matcher()
    assert all(m.advance(t) for t in smol.encode('{"b": 2}')) and m.can_end()


# ------------------------------------------------------------------ bounded grammar work
def compile_threads() -> int:
    return sum(thread.name == "grammar-compile" for thread in threading.enumerate())


@pytest.fixture
def compiler(smol_tokenizer):
    def make(**limits) -> ConstraintCompiler:
        c = ConstraintCompiler(
            smol_tokenizer, vocab_size=len(smol_tokenizer), eos_ids=[smol_tokenizer.eos_token_id],
            limits=GrammarLimits(**limits),
        )
        c.tokenizer_info()  # built once, outside any timing
        return c

    return make


def test_too_deep_or_too_large_grammars_are_400s_before_compiling(smol):
    """A 5,000-link $ref chain or 3,000 chained Lark rules would overflow the compiling
    thread's stack inside llguidance (SIGSEGV: the process gone); they are refused first."""
    before = smol.constraints.stats()["grammar_over_limits"]
    cases = [
        (json_schema_spec(ref_chain(5000), param="response_format"), "5,003 levels"),
        (json_schema_spec(ref_chain(900, lambda ref: {"type": "object", "properties": {"a": {"$ref": ref}}}),
                          param="response_format"), "2,703 levels"),
        (GrammarSpec("lark", rule_chain(3000), "guided_grammar"), "3,002 levels"),
        (GrammarSpec("lark", "start: " + "[" * 5000 + '"a"' + "]" * 5000, "guided_grammar"), "5,001 levels"),
        (GrammarSpec("regex", "a" * 300_000, "guided_regex"), "300,000 bytes; the limit is 262,144"),
    ]
    for spec, words in cases:
        with pytest.raises(InvalidInput) as err:
            compile_(smol, spec)
        assert err.value.param == spec.param and words in str(err.value), str(err.value)
        if "levels" in words:
            assert "the limit is 2,500" in str(err.value)
    assert smol.constraints.stats()["grammar_over_limits"] == before + len(cases)


def test_deepest_allowed_grammars_compile_on_the_big_stack(smol):
    """1,200 nested arrays by $ref is 2,403 levels, under the limit, and needs about
    9.4 MB of stack: more than a default 8 MB thread has (it crashed one before)."""
    nested = compile_(smol, json_schema_spec(ref_chain(1200, lambda ref: {"type": "array", "items": {"$ref": ref}}),
                                             param="schema"))
    m = nested.matcher()
    assert all(m.advance(t) for t in smol.encode("[[[[")) and not m.can_end()
    chain = compile_(smol, json_schema_spec(ref_chain(2000), param="schema"))  # the 2,000 links
    m = chain.matcher()
    assert all(m.advance(t) for t in smol.encode('"ok"')) and m.can_end()
    m = compile_(smol, GrammarSpec("lark", rule_chain(2000))).matcher()
    assert all(m.advance(t) for t in smol.encode("a")) and m.can_end()


@pytest.mark.perf  # asserts a wall-clock bound
def test_timed_out_grammar_is_refused_at_once_and_not_compiled_again(compiler):
    c = compiler(workers=1, queue=0)
    slow = json_schema_spec(optional_nulls(4000), param="response_format")
    with pytest.raises(InvalidInput) as err:
        c.compile(slow, timeout_s=0.2)
    assert err.value.param == "response_format" and "took longer than 0.2 s to compile" in str(err.value)
    threads = threading.active_count()
    assert compile_threads() == 1
    started = time.monotonic()
    for _ in range(20):  # resent: the same 400 at once, no new thread, no new compile
        with pytest.raises(InvalidInput) as again:
            c.compile(slow, timeout_s=0.2)
        assert str(again.value) == str(err.value)
    assert time.monotonic() - started < 0.5 and threading.active_count() <= threads and compile_threads() == 1
    stats = c.stats()
    assert (stats["grammar_compile_timeouts"], stats["grammar_refused"]) == (1, 20)
    assert stats["grammar_compile_running"] == 1 and stats["grammar_compiles"] == 0  # still running, once
    # The one worker is taken and nothing may wait: another grammar is a 429, at once.
    with pytest.raises(EngineOverloaded, match="busy"):
        c.compile(json_schema_spec(optional_nulls(10), param="other"), timeout_s=5)
    deadline = time.monotonic() + 60
    while c.stats()["grammar_compile_running"] and time.monotonic() < deadline:
        time.sleep(0.05)
    stats = c.stats()
    assert (stats["grammar_compiles"], stats["grammar_compile_busy"]) == (1, 1)
    assert compile_threads() == 0  # the worker left with its work
    with pytest.raises(InvalidInput):  # finishing late does not lift the refusal
        c.compile(slow, timeout_s=0.2)
    fine = json_schema_spec(optional_nulls(10), param="response_format")
    assert c.compile(fine, timeout_s=5)  # and a fine grammar compiles


def test_concurrent_requests_for_one_grammar_share_its_compile(compiler):
    c = compiler()
    spec = json_schema_spec(optional_nulls(1500), param="response_format")
    with ThreadPoolExecutor(4) as pool:
        grammars = list(pool.map(lambda _: c.compile(spec, timeout_s=60), range(4)))
    assert len({id(g._template) for g in grammars}) == 1 and c.stats()["grammar_compiles"] == 1


@pytest.mark.perf  # where the 5 ms mask budget runs out depends on the machine's speed
def test_ambiguous_grammar_ends_at_its_mask_budget(compiler, smol_tokenizer):
    """Each token of an ambiguous grammar costs more to mask (here 20 ms by token 50,
    2 s by 200); past the budget the row stops with an error naming the field."""
    c = compiler(mask_budget_s=0.005)
    m = c.compile(GrammarSpec("lark", AMBIGUOUS, "guided_grammar"), timeout_s=10).matcher()
    bitmask = np.zeros((1, mask_words(m.vocab_size)), dtype=np.int32)
    rng = np.random.default_rng(0)
    for step in range(300):  # noqa: B007 - read after the loop: the step the budget ran out at
        m.fill_mask(bitmask, 0)
        allowed = np.flatnonzero(np.unpackbits(bitmask.view(np.uint8), bitorder="little")[: m.vocab_size])
        if not m.advance(int(rng.choice([t for t in allowed if t != smol_tokenizer.eos_token_id]))):
            break
    assert m.abort is not None and m.abort.param == "guided_grammar", m.error
    assert "too ambiguous" in str(m.abort) and "limit of 5 ms a token" in str(m.abort)
    assert 10 < step < 200 and m.finished and not m.can_end() and m.error == str(m.abort)
    assert c.stats()["grammar_mask_budget_exceeded"] == 1


def test_over_budget_request_ends_with_an_error_and_spares_the_batch(smol, ask):
    c = ConstraintCompiler(smol.tokenizer, vocab_size=smol.vocab_size, eos_ids=smol.eos_ids,
                           limits=GrammarLimits(mask_budget_s=0.005))
    ambiguous = c.compile(GrammarSpec("lark", AMBIGUOUS, "guided_grammar"), timeout_s=10)
    plain = req(ask, rid="plain", max_tokens=40, temperature=0)
    alone = run(collect(smol, plain))
    r = req(ask, rid="bad", max_tokens=300, temperature=1.0, seed=1)
    bad = type(r)("bad", r.prompt_token_ids, r.sampling, 2, ambiguous)

    async def together():
        return await asyncio.gather(collect(smol, plain), collect(smol, bad), return_exceptions=True)

    ok, failed = run(together())
    assert isinstance(failed, InvalidInput) and failed.param == "guided_grammar" and "too ambiguous" in str(failed)
    assert text_of(ok[0]) == text_of(alone[0]) and ok[0][-1].finish_reason == alone[0][-1].finish_reason
    assert_idle(smol.stats())
