"""The constrained scenario: a ``json_schema`` chat beside the plain chat, level by level
in the same run (TPOT ratio), and grammar compile times cold and cached.

Both scenarios send the same prompts, greedy, with ``ignore_eos``; a constrained answer
still ends where its JSON ends (the grammar allows nothing else), so it may hold fewer
tokens than ``--max-tokens``: TPOT is per token, so the ratio stays comparable.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

# A schema with free text in it, so an answer runs for tens of tokens.
ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "topic": {"type": "string", "maxLength": 40},
        "answer": {"type": "string"},
        "keywords": {"type": "array", "items": {"type": "string", "maxLength": 20}, "minItems": 1, "maxItems": 5},
        "confidence": {"enum": ["low", "medium", "high"]},
    },
    "required": ["topic", "answer", "keywords", "confidence"],
    "additionalProperties": False,
}

RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "answer", "schema": ANSWER_SCHEMA, "strict": True}}

# The compile-time schemas: the scenario's own, a nested one, and a tool-call grammar's size.
COMPILE_SCHEMAS: dict[str, dict[str, Any]] = {
    "answer": ANSWER_SCHEMA,
    "nested": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
            "address": {"type": "object", "properties": {
                "street": {"type": "string"}, "city": {"type": "string"},
                "zip": {"anyOf": [{"type": "string", "pattern": "^[0-9]{5}$"}, {"type": "null"}]}},
                "required": ["street", "city", "zip"], "additionalProperties": False},
            "emails": {"type": "array", "items": {"type": "string", "format": "email"}, "maxItems": 3},
            "role": {"enum": ["admin", "user", "guest"]},
        },
        "required": ["name", "age", "address", "emails", "role"],
    },
}


def measure_compile(tokenizer: Any, vocab_size: int, eos_ids: tuple[int, ...]) -> dict[str, Any]:
    """Tokenizer data build, then each schema compiled cold and again from the cache (ms)."""
    from inference.constraints import ConstraintCompiler, json_schema_spec

    compiler = ConstraintCompiler(tokenizer, vocab_size=vocab_size, eos_ids=eos_ids)
    start = time.perf_counter()
    compiler.tokenizer_info()
    out: dict[str, Any] = {"tokenizer_info_ms": round((time.perf_counter() - start) * 1000, 1), "schemas": {}}
    for name, schema in COMPILE_SCHEMAS.items():
        spec = json_schema_spec(schema, param="schema")
        start = time.perf_counter()
        compiler.compile(spec, timeout_s=60)
        cold = time.perf_counter() - start
        start = time.perf_counter()
        compiler.compile(spec, timeout_s=60)
        cached = time.perf_counter() - start
        out["schemas"][name] = {"cold_ms": round(cold * 1000, 2), "cached_ms": round(cached * 1000, 3)}
    return out


def run_constrained(base_url: str, levels: list[int], requests_for: Callable[[int], int], *,
                    run_level: Callable[..., Any], summarize: Callable[[Any], dict[str, Any]],
                    on_phase: Callable[[str], None]) -> list[dict[str, Any]]:
    """Per level: the plain chat, then the json_schema chat; their TPOT ratio."""
    rows = []
    for level in levels:
        pair = {}
        for endpoint in ("chat", "chat_json"):
            on_phase(f"constrained scenario: {endpoint} c={level}")
            pair[endpoint] = summarize(run_level(base_url, endpoint, level, requests_for(level)))
        plain, constrained = pair["chat"]["tpot_ms"], pair["chat_json"]["tpot_ms"]
        ratio = None
        if plain["p50"] and constrained["p50"]:
            ratio = round(constrained["p50"] / plain["p50"], 3)
        rows.append({"concurrency": level, "plain": pair["chat"], "json_schema": pair["chat_json"],
                     "tpot_p50_ratio": ratio})
    return rows


def render(section: dict[str, Any]) -> list[str]:
    lines = ["", "constrained decoding: json_schema chat vs plain chat, same prompts, greedy (times in ms)",
             f"{'conc':>4} {'plain TPOT50':>12} {'json TPOT50':>11} {'ratio':>5} {'plain tok/s':>11} "
             f"{'json tok/s':>10} {'json tokens/req':>15} {'fail':>4}"]
    for row in section.get("levels", []):
        p, j = row["plain"], row["json_schema"]
        lines.append(f"{row['concurrency']:>4} {p['tpot_ms']['p50'] or '-':>12} {j['tpot_ms']['p50'] or '-':>11} "
                     f"{row['tpot_p50_ratio'] or '-':>5} {p['output_tokens_per_s'] or '-':>11} "
                     f"{j['output_tokens_per_s'] or '-':>10} {j['mean_output_tokens'] or '-':>15} "
                     f"{p['failures'] + j['failures']:>4}")
    compile_ = section.get("compile")
    if compile_:
        parts = [f"{name} {c['cold_ms']} ms cold / {c['cached_ms']} ms cached"
                 for name, c in compile_["schemas"].items()]
        lines.append(f"grammar compile: tokenizer data {compile_['tokenizer_info_ms']} ms once per model; "
                     + "; ".join(parts))
    return lines
