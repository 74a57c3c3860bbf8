"""Cheap static checks of a grammar before it is compiled: how deep llguidance's
compiler will recurse on it.

llguidance compiles recursively: every nested object, array or Lark group, every
``$ref`` and every Lark rule or terminal that names another one costs the compiling
thread 2-4 KB of stack (measured with llguidance 1.9.1: ``$ref`` chains 3.4 KB a link,
nested ``items`` 3.9 KB a level, Lark rule chains 3.1 KB a rule). A chain of about
2,500 ``$ref`` aliases, 900 ``$ref``'d objects or 2,700 Lark rules overflows a default
8 MB thread stack: a SIGSEGV, and every request of the process is lost. Nesting within
one document is bounded by llguidance itself (128 JSON levels; Lark parentheses), but
references are not, so we measure the deepest path the compiler can take and refuse a
grammar that goes deeper than a limit, in time linear in its size and without
recursion of our own (the checks run on request threads with ordinary stacks).

Depth is counted in levels: each JSON object or array along a path through a schema
is one, and a ``$ref`` leads on into its target; each Lark rule or terminal is one,
plus its deepest group of parentheses or brackets, plus the depth of any ``%json``
schema in it. Recursion (a ``$ref`` back to an enclosing schema, a rule that refers to
itself) is compiled by llguidance through references, not by recursing; a cycle's
members count as their sum, an upper bound on any path through them, so no order of
traversal can go deeper than the number reported here.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote, urljoin

__all__ = ["lark_depth", "longest_path", "schema_depth"]


def longest_path(weights: list[int], edges: list[list[int]]) -> int:
    """The heaviest path in a directed graph (node ``i`` weighs ``weights[i]``), where
    each strongly connected group counts as the sum of its members. Iterative Tarjan:
    groups come out after every group they reach, so one pass adds them up."""
    n = len(weights)
    index = [-1] * n
    low = [0] * n
    on_stack = [False] * n
    group = [-1] * n
    best: list[int] = []  # per group, in the order Tarjan completes them
    stack: list[int] = []
    counter = 0
    for root in range(n):
        if index[root] != -1:
            continue
        work = [(root, 0)]
        while work:
            v, i = work[-1]
            if i == 0:
                index[v] = low[v] = counter
                counter += 1
                stack.append(v)
                on_stack[v] = True
            if i < len(edges[v]):
                work[-1] = (v, i + 1)
                u = edges[v][i]
                if index[u] == -1:
                    work.append((u, 0))
                elif on_stack[u]:
                    low[v] = min(low[v], index[u])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[v])
            if low[v] != index[v]:
                continue
            members = []
            g = len(best)
            while True:
                u = stack.pop()
                on_stack[u] = False
                group[u] = g
                members.append(u)
                if u == v:
                    break
            after = max((best[group[x]] for u in members for x in edges[u] if group[x] != g), default=0)
            best.append(sum(weights[u] for u in members) + after)
    return max(best, default=0)


# ------------------------------------------------------------------------ JSON schema
def schema_depth(schema: Any) -> int:
    """Levels of the deepest path through ``schema`` (a parsed JSON value) with every
    ``$ref`` followed: JSON pointers, ``$anchor`` names and ``$id`` URIs, as llguidance
    resolves them. A reference that does not resolve adds nothing (llguidance refuses it)."""
    nodes: dict[int, int] = {}  # id(container) -> node
    edges: list[list[int]] = []
    ids: dict[str, Any] = {}  # absolute $id (no fragment) -> the schema carrying it
    anchors: dict[str, Any] = {}  # "base#name" and "#name" -> the schema
    refs: list[tuple[int, str, str]] = []  # (node, $ref, base URI where it appears)

    def node(value: Any) -> int:
        nodes[id(value)] = len(edges)
        edges.append([])
        return len(edges) - 1

    if not isinstance(schema, (dict, list)):
        return 0
    todo: list[tuple[Any, int, str]] = [(schema, node(schema), "")]
    while todo:
        value, me, base = todo.pop()
        if isinstance(value, dict):
            if isinstance(value.get("$id"), str):
                base = urljoin(base, value["$id"]) if base else value["$id"]
                ids.setdefault(base.split("#", 1)[0], value)
            if isinstance(value.get("$anchor"), str):
                anchors.setdefault(f"{base.split('#', 1)[0]}#{value['$anchor']}", value)
                anchors.setdefault(f"#{value['$anchor']}", value)
            if isinstance(value.get("$ref"), str):
                refs.append((me, value["$ref"], base))
            children = value.values()
        else:
            children = value
        for child in children:
            if isinstance(child, (dict, list)):
                other = node(child)
                edges[me].append(other)
                todo.append((child, other, base))
    ids.setdefault("", schema)
    for me, ref, base in refs:
        target = _resolve(schema, ref, base, ids, anchors)
        if isinstance(target, (dict, list)) and id(target) in nodes:
            edges[me].append(nodes[id(target)])
    return longest_path([1] * len(edges), edges)


def _resolve(root: Any, ref: str, base: str, ids: dict[str, Any], anchors: dict[str, Any]) -> Any:
    full = urljoin(base, ref) if base else ref
    uri, _, fragment = full.partition("#")
    document = ids.get(uri, root if not uri or ref.startswith("#") else None)
    if document is None:
        return None
    if fragment and not fragment.startswith("/"):
        return anchors.get(f"{uri}#{fragment}", anchors.get(f"#{fragment}"))
    value = document
    for part in fragment.split("/")[1:]:
        part = unquote(part).replace("~1", "/").replace("~0", "~")
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


# ------------------------------------------------------------------------------ Lark
# A rule or terminal definition at the start of a line: `name:`, `?name:`, `!name:`,
# `name.2:`, llguidance's `name[max_tokens=9]:`; not GBNF's `::=` (converted before).
_DEFINITION = re.compile(r"^[ \t]*[?!]?([A-Za-z_][A-Za-z0-9_]*)(?:\[[^\]\n]*\])?(?:\.-?\d+)?[ \t]*:(?![:=])", re.M)
_TOKEN = re.compile(
    r"""(?P<skip>"(?:[^"\\\n]|\\.)*"i?          # a string literal
        |/(?![/*])(?:[^/\\\n]|\\.)+/[imslux]*   # a regex literal
        |//[^\n]*                               # a comment
        |<\|[^\n]*?\|>|<\[[^\]\n]*\]>)          # a special token
      |(?P<json>%json\b)
      |(?P<name>[A-Za-z_][A-Za-z0-9_]*)
      |(?P<open>[(\[])
      |(?P<close>[)\]])
      |(?P<other>[^"/<%A-Za-z_()\[\]]+|.)""",
    re.X | re.S,
)
_SPACE = re.compile(r"\s*")


def lark_depth(text: str) -> int:
    """Levels of the deepest chain of rule and terminal references in a Lark grammar
    (llguidance's dialect), each definition counting one plus its deepest group and
    the depth of any ``%json`` schema in it."""
    starts = list(_DEFINITION.finditer(text))
    names = {m.group(1): i for i, m in enumerate(starts)}
    weights = [1] * len(starts)
    edges: list[list[int]] = [[] for _ in starts]
    decoder = json.JSONDecoder()
    for i, m in enumerate(starts):
        pos, end = m.end(), starts[i + 1].start() if i + 1 < len(starts) else len(text)
        groups = deepest = extra = 0
        while pos < end:
            token = _TOKEN.match(text, pos, end)
            if token is None:  # cannot happen: `other` matches any character
                break
            pos = token.end()
            kind = token.lastgroup
            if kind == "name" and token.group() in names:
                edges[i].append(names[token.group()])
            elif kind == "open":
                groups += 1
                deepest = max(deepest, groups)
            elif kind == "close":
                groups = max(groups - 1, 0)
            elif kind == "json":
                start = _SPACE.match(text, pos).end()
                try:
                    schema, after = decoder.raw_decode(text, start)
                except ValueError:
                    continue  # not JSON: llguidance reports it
                except RecursionError:  # nested deeper than Python parses: deeper than any limit
                    return len(text)
                extra = max(extra, schema_depth(schema))
                pos = after
        weights[i] += deepest + extra
    return longest_path(weights, edges)
