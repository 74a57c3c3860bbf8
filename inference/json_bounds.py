"""Digit limits for the numbers in generated JSON, as a rewrite of the JSON schema that
llguidance compiles.

llguidance compiles an unbounded ``{"type": "number"}`` to the lexeme
``-?(0|[1-9][0-9]*)(\\.[0-9]+)?([eE][+-]?[0-9]+)?``, so at temperature 0 a small model
writes ``1.718750000000...`` until ``max_tokens``: a JSON number past about 15
significant digits carries nothing a double keeps. llguidance has no option for a
number's length, but two keywords it enforces bound it:

- ``minimum``/``maximum`` (and the exclusive ones) bound the digits before the point
  (its range regexes have no exponent and, for the fraction, ``(\\.[0-9]+)?``);
- ``multipleOf: 1e-k`` allows at most ``k`` digits after the point (a trailing zero
  counts: ``1.50`` is not a multiple of ``1e-1`` in its automaton). llguidance keeps a
  ``multipleOf`` as a 32-bit decimal, so ``k`` is at most 10.

So every ``number`` gets an ``anyOf`` of magnitude buckets, ``|x| < 10**d`` with
``min(10, 15 - d)`` digits after the point for ``d`` = 5..15, and every ``integer`` at
most :data:`MAX_DIGITS` digits. Values of the schema's own ``type`` keep their place: an
``anyOf`` next to other keywords is an intersection, so every answer still validates
against the schema the user sent. Positions where the schema allows any JSON value (``{}``,
``true``, an object without ``properties`` or ``additionalProperties``, an array without
``items``: what ``json_object`` mode asks for) get a recursive "any value" definition
whose numbers are bounded the same way.

What is left as sent: ``enum``/``const`` (literal data), numbers whose own bounds lie
outside the limits, and the inside of ``not`` and ``if`` (bounding there would widen
what the schema accepts). ``maxLength`` and ``maxItems`` need nothing here: llguidance
enforces them (tested in tests/inference/test_json_bounds.py).
"""

from __future__ import annotations

from typing import Any

# A double round-trips every decimal of 15 significant digits (DBL_DIG).
MAX_DIGITS = 15
# llguidance's multipleOf is a u32 coefficient over a power of ten: 1e-11 does not compile.
MAX_FRACTION_DIGITS = 10
MAX_INTEGER = 10**MAX_DIGITS - 1

ANY_VALUE_DEF = "gpt3dev_json_value"

_SCHEMA_KEYS = {
    "items", "additionalItems", "additionalProperties", "unevaluatedItems",
    "unevaluatedProperties", "contains", "propertyNames", "then", "else",
}
_SCHEMA_LISTS = {"anyOf", "oneOf", "allOf", "prefixItems", "items"}
_SCHEMA_MAPS = {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}
_APPLICATORS = {"anyOf", "oneOf", "allOf", "$ref", "$dynamicRef", "enum", "const"}
_ANNOTATIONS = {"title", "description", "default", "examples", "$comment", "deprecated", "readOnly", "writeOnly"}
_NON_NUMBER_TYPES = ["null", "boolean", "string", "array", "object"]


def number_buckets() -> list[dict[str, Any]]:
    """``number`` alternatives that together allow at most ``MAX_DIGITS`` digits,
    ``MAX_FRACTION_DIGITS`` of them after the point, and no exponent."""
    buckets = []
    for whole in range(MAX_DIGITS - MAX_FRACTION_DIGITS, MAX_DIGITS + 1):
        fraction = min(MAX_FRACTION_DIGITS, MAX_DIGITS - whole)
        buckets.append({
            "type": "number",
            "exclusiveMinimum": -(10**whole),
            "exclusiveMaximum": 10**whole,
            "multipleOf": float(f"1e-{fraction}") if fraction else 1,
        })
    return buckets


def bounded(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``schema`` whose numbers (typed or inside any-value positions) are
    bounded to what a double carries; every answer still validates against ``schema``."""
    rewriter = _Rewriter(_free_name(schema.get("$defs")))
    out = rewriter.schema(schema, any_ok=True, root=True)
    if rewriter.used_any and isinstance(out, dict):
        out = dict(out)
        out["$defs"] = {**(out.get("$defs") or {}), rewriter.def_name: rewriter.any_value()}
    return out


def _free_name(defs: Any) -> str:
    taken = defs.keys() if isinstance(defs, dict) else ()
    name, n = ANY_VALUE_DEF, 1
    while name in taken:
        n += 1
        name = f"{ANY_VALUE_DEF}_{n}"
    return name


class _Rewriter:
    def __init__(self, def_name: str) -> None:
        self.def_name = def_name
        self.used_any = False

    def any_ref(self) -> dict[str, Any]:
        self.used_any = True
        return {"$ref": f"#/$defs/{self.def_name}"}

    def any_value(self) -> dict[str, Any]:
        ref = {"$ref": f"#/$defs/{self.def_name}"}
        return {"anyOf": [
            {"type": ["null", "boolean", "string"]},
            *number_buckets(),
            {"type": "array", "items": ref},
            {"type": "object", "additionalProperties": ref},
        ]}

    def schema(self, node: Any, *, any_ok: bool, root: bool = False, typed: bool = False) -> Any:
        """``node`` rewritten. ``typed``: it is a branch of an ``anyOf``/``oneOf``/
        ``allOf`` whose owner has a ``type`` (and bounds); an untyped branch there
        adds nothing, so it is left as it is."""
        if node is True:
            return self.any_ref() if any_ok and not typed else node
        if not isinstance(node, dict):
            return node
        # A nested $id moves the base of "#/$defs/..." refs: no any-value refs below it.
        any_ok = any_ok and (root or "$id" not in node)
        types = node.get("type")
        out = {key: self._child(key, value, any_ok, typed or types is not None) for key, value in node.items()}
        if _APPLICATORS & node.keys() or (typed and types is None):
            return _with_number_bounds(out) if types is not None else out
        if types is None:
            if any_ok and node.keys() <= _ANNOTATIONS:
                return out | self.any_ref()
            types = ["number", *_NON_NUMBER_TYPES]  # untyped: any value that meets its keywords
            out = _with_number_bounds(out, types)
        else:
            out = _with_number_bounds(out)
        listed = types if isinstance(types, list) else [types]
        if any_ok and "object" in listed and not {"additionalProperties", "unevaluatedProperties"} & node.keys():
            out["additionalProperties"] = self.any_ref()
        if any_ok and "array" in listed:
            if "items" not in node and "unevaluatedItems" not in node:
                out["items"] = self.any_ref()
            elif isinstance(node.get("items"), list) and "additionalItems" not in node:
                out["additionalItems"] = self.any_ref()
        return out

    def _child(self, key: str, value: Any, any_ok: bool, typed: bool) -> Any:
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            return {name: self.schema(sub, any_ok=any_ok) for name, sub in value.items()}
        if key in _SCHEMA_LISTS and isinstance(value, list):
            branch = typed and key in ("anyOf", "oneOf", "allOf")
            return [self.schema(sub, any_ok=any_ok, typed=branch) for sub in value]
        if key in _SCHEMA_KEYS:
            return self.schema(value, any_ok=any_ok)
        return value  # data (enum, const, default, x-guidance, ...) and not/if: as sent


def _with_number_bounds(node: dict[str, Any], types: Any = None) -> dict[str, Any]:
    """``node`` (already rewritten below) with its numbers bounded, if it allows any."""
    types = node.get("type") if types is None else types
    listed = types if isinstance(types, list) else [types]
    if not {"number", "integer"} & set(listed) or {"enum", "const"} & node.keys():
        return node
    low, high = _bound(node, "minimum", "exclusiveMinimum", max), _bound(node, "maximum", "exclusiveMaximum", min)
    if (low is not None and low > MAX_INTEGER) or (high is not None and high < -MAX_INTEGER):
        return node  # the schema asks for numbers beyond the limits: leave them to it
    out = dict(node)
    if "number" not in listed or "multipleOf" in node:
        # An integer, or a multipleOf that already bounds the fraction (llguidance would
        # otherwise take the lcm with ours in 32 bits): bound the magnitude only.
        if low is None:
            out["minimum"] = -MAX_INTEGER
        if high is None:
            out["maximum"] = MAX_INTEGER
        return out
    others = [t for t in listed if t not in ("number", "integer")]
    alternatives = number_buckets() + ([{"type": others}] if others else [])
    if "anyOf" in out:
        out["allOf"] = [*out.get("allOf", []), {"anyOf": alternatives}]
    else:
        out["anyOf"] = alternatives
    return out


def _bound(node: dict[str, Any], inclusive: str, exclusive: str, pick: Any) -> float | None:
    values = [v for v in (node.get(inclusive), node.get(exclusive))
              if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return pick(values) if values else None
