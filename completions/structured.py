"""Constrained output requests: OpenAI's ``response_format`` (chat) and vLLM's
``structured_outputs`` / ``guided_*`` extensions (both endpoints), validated by DRF and
turned into one :class:`inference.constraints.GrammarSpec` per request.

Each error names the field as the client wrote it (``response_format.json_schema.schema``,
``structured_outputs.regex``, ``guided_choice``, ...).
"""

from __future__ import annotations

import json
import re
from typing import Any

from rest_framework import serializers

from core.fields import StrictCharField
from inference.constraints import GrammarSpec, json_schema_spec

NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
ANY_JSON_OBJECT: dict[str, Any] = {"type": "object"}


class JSONSchemaFormatSerializer(serializers.Serializer):
    name = serializers.RegexField(NAME_RE, error_messages={
        "invalid": "must be 1-64 letters, digits, underscores or dashes."
    })
    description = StrictCharField(required=False, allow_blank=True)
    schema = serializers.JSONField(required=False)
    strict = serializers.BooleanField(required=False, allow_null=True)

    def validate_schema(self, value: Any) -> Any:
        if not isinstance(value, dict):
            raise serializers.ValidationError("must be a JSON schema object.")
        return value


class ResponseFormatSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=["text", "json_object", "json_schema"])
    json_schema = JSONSchemaFormatSerializer(required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs["type"] == "json_schema" and "json_schema" not in attrs:
            raise serializers.ValidationError({"json_schema": "is required when type is 'json_schema'."})
        return attrs


def _schema_value(value: Any) -> dict[str, Any]:
    """vLLM takes a schema as an object or as its JSON text."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise serializers.ValidationError("must be a JSON schema (an object or its JSON text).") from None
    if not isinstance(value, dict):
        raise serializers.ValidationError("must be a JSON schema object.")
    return value


def _choice_value(value: Any) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(c, str) and c for c in value):
        raise serializers.ValidationError("must be a non-empty array of non-empty strings.")
    return value


def _text_value(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise serializers.ValidationError("must be a non-empty string.")
    return value


class StructuredOutputsSerializer(serializers.Serializer):
    """vLLM's ``structured_outputs``: exactly one of json, regex, choice, grammar, json_object."""

    json = serializers.JSONField(required=False)
    regex = serializers.JSONField(required=False)
    choice = serializers.JSONField(required=False)
    grammar = serializers.JSONField(required=False)
    json_object = serializers.BooleanField(required=False)

    validate_json = staticmethod(_schema_value)
    validate_regex = staticmethod(_text_value)
    validate_choice = staticmethod(_choice_value)
    validate_grammar = staticmethod(_text_value)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        given = [k for k in ("json", "regex", "choice", "grammar") if k in attrs] + (
            ["json_object"] if attrs.get("json_object") else []
        )
        if len(given) != 1:
            raise serializers.ValidationError(
                "give exactly one of json, regex, choice, grammar or json_object"
                + (f" (got {', '.join(given)})." if given else ".")
            )
        return attrs


class GuidedFieldsMixin(serializers.Serializer):
    """The constrained-output fields of both generation endpoints (vLLM's names)."""

    structured_outputs = StructuredOutputsSerializer(required=False, allow_null=True)
    guided_json = serializers.JSONField(required=False, allow_null=True)
    guided_regex = serializers.JSONField(required=False, allow_null=True)
    guided_choice = serializers.JSONField(required=False, allow_null=True)
    guided_grammar = serializers.JSONField(required=False, allow_null=True)
    guided_decoding_backend = StrictCharField(required=False, allow_null=True, allow_blank=True)

    def validate_guided_json(self, value: Any) -> Any:
        return None if value is None else _schema_value(value)

    def validate_guided_regex(self, value: Any) -> Any:
        return None if value is None else _text_value(value)

    def validate_guided_choice(self, value: Any) -> Any:
        return None if value is None else _choice_value(value)

    def validate_guided_grammar(self, value: Any) -> Any:
        return None if value is None else _text_value(value)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        asked = constraint_fields(attrs)
        if len(asked) > 1:
            raise serializers.ValidationError(
                {asked[1]: f"cannot be combined with {asked[0]}: a request takes one output constraint."}
            )
        return attrs


GUIDED = ("guided_json", "guided_regex", "guided_choice", "guided_grammar")


def constraint_fields(attrs: dict[str, Any]) -> list[str]:
    """The request fields that constrain the output, in the order they are looked at."""
    fields = []
    rf = attrs.get("response_format")
    if rf and rf.get("type") != "text":
        fields.append("response_format")
    if attrs.get("structured_outputs"):
        fields.append("structured_outputs")
    fields += [g for g in GUIDED if attrs.get(g) is not None]
    return fields


def grammar_spec(data: dict[str, Any]) -> GrammarSpec | None:
    """The one output constraint a validated request asks for, else None."""
    rf = data.get("response_format")
    if rf and rf["type"] == "json_object":
        return json_schema_spec(ANY_JSON_OBJECT, param="response_format")
    if rf and rf["type"] == "json_schema":
        schema = rf["json_schema"].get("schema", ANY_JSON_OBJECT)
        return json_schema_spec(schema, param="response_format.json_schema.schema")
    so = data.get("structured_outputs")
    if so:
        if so.get("json_object"):
            return json_schema_spec(ANY_JSON_OBJECT, param="structured_outputs.json_object")
        key = next(k for k in ("json", "regex", "choice", "grammar") if k in so)
        return _spec(key, so[key], f"structured_outputs.{key}")
    for name in GUIDED:
        if data.get(name) is not None:
            return _spec(name.removeprefix("guided_"), data[name], name)
    return None


def _spec(kind: str, value: Any, param: str) -> GrammarSpec:
    if kind == "json":
        return json_schema_spec(value, param=param)
    if kind == "choice":
        return GrammarSpec("choice", json.dumps(value, ensure_ascii=False), param)
    return GrammarSpec("regex" if kind == "regex" else "lark", value, param)


def response_schema(data: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON schema a chat answer's text must follow (for tools' text branch), if any."""
    rf = data.get("response_format")
    if rf and rf["type"] == "json_object":
        return ANY_JSON_OBJECT
    if rf and rf["type"] == "json_schema":
        return rf["json_schema"].get("schema", ANY_JSON_OBJECT)
    return None
