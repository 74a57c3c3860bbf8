"""DRF serializer for /v1/embeddings requests."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from core.fields import KnownFieldsOnly, StrictCharField, strings_or_token_ids

MAX_INPUTS = 2048


class EmbeddingInputField(serializers.Field):
    """A string, strings, token ids, or token-id lists; returns a list of str or a list
    of id lists. Empty input of any kind is refused."""

    def to_internal_value(self, data: Any) -> list[str] | list[list[int]]:
        if isinstance(data, str):
            data = [data]
        if not isinstance(data, list) or not data:
            raise serializers.ValidationError("must be a non-empty string or a non-empty array.")
        if len(data) > MAX_INPUTS:
            raise serializers.ValidationError(f"may hold at most {MAX_INPUTS} items, got {len(data)}.")
        inputs = strings_or_token_ids(data)
        if inputs is not None and any(item == "" for item in inputs):
            raise serializers.ValidationError("must not contain empty strings.")
        if inputs is not None:
            return inputs
        raise serializers.ValidationError(
            "must be a string, an array of strings, an array of token ids or an array of non-empty token-id arrays."
        )

    def to_representation(self, value: Any) -> Any:
        return value


class EmbeddingRequestSerializer(KnownFieldsOnly, serializers.Serializer):
    model = StrictCharField()
    input = EmbeddingInputField()
    encoding_format = serializers.ChoiceField(choices=["float", "base64"], required=False, default="float")
    dimensions = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    user = serializers.CharField(required=False, allow_null=True, allow_blank=True)
