"""The ``POST /v1/responses`` request (OpenAI's ``CreateResponse``), validated by DRF.

Every field of OpenAI's schema is accepted. Those that change the answer are honoured;
those that cannot apply to a local model (``reasoning``, ``prompt_cache_key``,
``safety_identifier``, ``service_tier``, ``user``, ``moderation``,
``context_management``, ``client_metadata``, ``include`` entries other than logprobs,
...) are accepted and ignored; ``metadata`` is stored and returned. ``conversation`` and
``prompt`` (OpenAI-hosted objects) are a 400. A field outside the schema is a 400
naming it. ``seed`` is an extension, as on chat.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from core.fields import KnownFieldsOnly, StrictCharField

LOGPROBS_INCLUDE = "message.output_text.logprobs"


class ResponseRequestSerializer(KnownFieldsOnly, serializers.Serializer):
    ignored_fields = frozenset({
        "reasoning", "prompt_cache_key", "prompt_cache_options", "prompt_cache_retention", "safety_identifier",
        "service_tier", "moderation", "context_management", "client_metadata", "stream_options",
    })

    model = StrictCharField()
    input = serializers.JSONField(required=False, allow_null=True)
    instructions = serializers.CharField(required=False, allow_null=True, allow_blank=True, trim_whitespace=False)
    previous_response_id = StrictCharField(required=False, allow_null=True, allow_blank=True)
    max_output_tokens = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    temperature = serializers.FloatField(required=False, allow_null=True, min_value=0, max_value=2)
    top_p = serializers.FloatField(required=False, allow_null=True, min_value=0, max_value=1)
    top_logprobs = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=20)
    seed = serializers.IntegerField(required=False, allow_null=True, min_value=-(2**63), max_value=2**64 - 1)
    tools = serializers.JSONField(required=False, allow_null=True)
    tool_choice = serializers.JSONField(required=False, allow_null=True)
    parallel_tool_calls = serializers.BooleanField(required=False, allow_null=True)
    max_tool_calls = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    text = serializers.JSONField(required=False, allow_null=True)
    include = serializers.ListField(child=StrictCharField(), required=False, allow_null=True)
    store = serializers.BooleanField(required=False, allow_null=True)
    stream = serializers.BooleanField(required=False, allow_null=True)
    background = serializers.BooleanField(required=False, allow_null=True)
    metadata = serializers.DictField(child=StrictCharField(allow_blank=True, max_length=512), required=False,
                                     allow_null=True)
    truncation = serializers.ChoiceField(choices=["auto", "disabled"], required=False, allow_null=True)
    user = serializers.CharField(required=False, allow_null=True, allow_blank=True)
    conversation = serializers.JSONField(required=False, allow_null=True)
    prompt = serializers.JSONField(required=False, allow_null=True)

    def validate_top_p(self, value: float | None) -> float | None:
        if value is not None and value <= 0:
            raise serializers.ValidationError("must be greater than 0 and at most 1.")
        return value

    def validate_metadata(self, value: dict | None) -> dict | None:
        if value is not None and len(value) > 16:
            raise serializers.ValidationError("may hold at most 16 keys.")
        for key in value or {}:
            if len(key) > 64:
                raise serializers.ValidationError(f"key {key[:20]!r}... is longer than 64 characters.")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        for name, why in (("conversation", "conversations are OpenAI-hosted objects; use previous_response_id"),
                          ("prompt", "prompt templates are OpenAI-hosted objects; send input and instructions")):
            if attrs.get(name) is not None:
                raise serializers.ValidationError({name: f"is not supported by this server: {why}."})
        if attrs.get("background") and attrs.get("store") is False:
            raise serializers.ValidationError({"background": "requires store (a background response is polled)."})
        if attrs.get("background") and attrs.get("stream"):
            raise serializers.ValidationError(
                {"background": "cannot be combined with stream on this server; poll GET /v1/responses/{id}."})
        if attrs.get("input") is None and not attrs.get("previous_response_id"):
            raise serializers.ValidationError({"input": "is required (a string or an array of input items)."})
        return attrs


class InputTokensRequestSerializer(ResponseRequestSerializer):
    """``POST /v1/responses/input_tokens``: the same fields, nothing generated."""


class ListQuerySerializer(serializers.Serializer):
    """``GET /v1/responses/{id}/input_items`` query parameters."""

    after = serializers.CharField(required=False)
    limit = serializers.IntegerField(required=False, min_value=1, max_value=100, default=20)
    order = serializers.ChoiceField(choices=["asc", "desc"], required=False, default="desc")
    include = serializers.ListField(child=serializers.CharField(), required=False)
