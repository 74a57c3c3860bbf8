"""Serializer fields and rules every API app shares."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rest_framework import serializers


class StrictCharField(serializers.CharField):
    """A string field that refuses numbers and booleans instead of turning them into
    strings: ``"model": 123`` is a 400 naming the field, not a lookup of the model "123"."""

    default_error_messages = {"invalid": "must be a string, not {kind}."}

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid", kind=_json_kind(data))
        return super().to_internal_value(data)


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def is_token_id(value: Any) -> bool:
    """A token id as a client sends it: a non-negative integer (not a boolean)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def strings_or_token_ids(data: list[Any]) -> list[str] | list[list[int]] | None:
    """The rule that completions' ``prompt`` and embeddings' ``input`` arrays share:
    strings; one array of token ids (a single prompt); or non-empty arrays of token ids.
    Returns the list of prompts, or None for any other shape."""
    if all(isinstance(item, str) for item in data):
        return list(data)
    if all(is_token_id(item) for item in data):
        return [list(data)]
    if all(isinstance(item, list) and item and all(is_token_id(t) for t in item) for item in data):
        return [list(item) for item in data]
    return None


class KnownFieldsOnly:
    """A serializer mixin: a request field the serializer does not declare is a 400 naming
    it, as OpenAI answers an unrecognized argument, never silently dropped. Names in
    ``ignored_fields`` (bookkeeping that cannot change the answer, such as ``metadata``)
    are accepted and ignored."""

    ignored_fields: frozenset[str] = frozenset()

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            for name in data:
                if name not in self.fields and name not in self.ignored_fields:  # type: ignore[attr-defined]
                    raise serializers.ValidationError(
                        {name: "unrecognized request argument: this server does not support it "
                               "(and does not ignore a field silently)."}
                    )
        return super().to_internal_value(data)  # type: ignore[misc]
