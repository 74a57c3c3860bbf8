"""Grammars that once took the server down or held it: deep ``$ref`` chains and rule
chains (a stack overflow inside llguidance), schemas slow to compile, and an ambiguous
Lark grammar whose every token costs more to mask. Shared by the engine and e2e tests."""

from __future__ import annotations

from collections.abc import Callable

# Every text of a's and b's parses many ways: the Earley chart grows with each token
# (here 20 ms a mask by token 50, 2 s by token 200).
AMBIGUOUS = 'start: s\ns: s s s | s s | "a" | "b" | "ab"'


def ref_chain(links: int, link: Callable[[str], dict] = lambda ref: {"$ref": ref}) -> dict:
    """A schema that is a chain of ``links`` definitions, each leading to the next
    (by default a bare ``$ref``: 5,000 links is 178 KB)."""
    defs = {f"d{i}": link(f"#/$defs/d{i + 1}") for i in range(links)}
    defs[f"d{links}"] = {"type": "string"}
    return {"$defs": defs, "$ref": "#/$defs/d0"}


def rule_chain(rules: int) -> str:
    """A Lark grammar of ``rules`` rules, each the next one."""
    return "start: r0\n" + "\n".join(f"r{i}: r{i + 1}" for i in range(rules)) + f'\nr{rules}: "a"'


def optional_nulls(count: int) -> dict:
    """A schema slow to compile (quadratic in its optional properties): about 1.2 s for
    3,000 and 4.7 s for 6,000 on the 2-core test machine."""
    return {"type": "object", "properties": {f"p{i}": {"type": "null"} for i in range(count)}}
