"""DRF serializers for /v1/rerank (Jina's and Cohere's request shape) and /score (vLLM's).

Documents are strings or ``{"text": ...}`` objects. The number of documents (pairs for
/score) is capped by ``MAX_RERANK_DOCUMENTS`` and their text by ``MAX_INPUT_CHARS``,
each checked before the items are read, with a 400 that names the field and the cap.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework import serializers

from core.fields import KnownFieldsOnly, StrictCharField


def _check_count(items: list[Any]) -> None:
    cap = settings.GPT3DEV["MAX_RERANK_DOCUMENTS"]
    if len(items) > cap:
        raise serializers.ValidationError(
            f"this server accepts at most {cap} documents per request (MAX_RERANK_DOCUMENTS), got {len(items)}."
        )


def check_chars(attrs: dict[str, Any], fields: tuple[str, ...]) -> None:
    """MAX_INPUT_CHARS over every text of the request; the 400 names the last field."""
    limit = settings.GPT3DEV["MAX_INPUT_CHARS"]
    total = 0
    for name in fields:
        value = attrs.get(name) or []
        total += sum(len(text) for text in ([value] if isinstance(value, str) else value))
        if total > limit:
            raise serializers.ValidationError(
                {name: f"the request holds {total} or more characters of text; this server accepts at most {limit} "
                       "(MAX_INPUT_CHARS)."}
            )


class DocumentsField(serializers.Field):
    """A non-empty list of strings or ``{"text": str}`` objects; returns the strings."""

    def to_internal_value(self, data: Any) -> list[str]:
        if not isinstance(data, list) or not data:
            raise serializers.ValidationError("must be a non-empty array of strings or {\"text\": ...} objects.")
        _check_count(data)
        texts = []
        for index, item in enumerate(data):
            if isinstance(item, dict) and isinstance(item.get("text"), str):
                item = item["text"]
            if not isinstance(item, str):
                raise serializers.ValidationError(f"document {index} is not a string or a {{\"text\": ...}} object.")
            texts.append(item)
        return texts

    def to_representation(self, value: Any) -> Any:
        return value


class TextsField(serializers.Field):
    """/score's ``text_1`` / ``text_2``: a string or a non-empty list of strings."""

    def to_internal_value(self, data: Any) -> list[str]:
        items = [data] if isinstance(data, str) else data
        if not isinstance(items, list) or not items:
            raise serializers.ValidationError("must be a string or a non-empty array of strings.")
        _check_count(items)
        if not all(isinstance(item, str) for item in items):
            raise serializers.ValidationError("must be a string or a non-empty array of strings.")
        return list(items)

    def to_representation(self, value: Any) -> Any:
        return value


class RerankRequestSerializer(KnownFieldsOnly, serializers.Serializer):
    # Cohere's scheduling hint cannot change the answer.
    ignored_fields = frozenset({"priority", "user"})

    model = StrictCharField()
    query = StrictCharField(trim_whitespace=False)
    documents = DocumentsField()
    top_n = serializers.IntegerField(required=False, allow_null=True, min_value=0)  # 0 or null: all
    return_documents = serializers.BooleanField(required=False, allow_null=True, default=True)
    max_tokens_per_doc = serializers.IntegerField(required=False, allow_null=True, min_value=1)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        check_chars(attrs, ("query", "documents"))
        return attrs


class ScoreRequestSerializer(KnownFieldsOnly, serializers.Serializer):
    model = StrictCharField()
    text_1 = TextsField()
    text_2 = TextsField()

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        first, second = attrs["text_1"], attrs["text_2"]
        if len(first) != 1 and len(first) != len(second):
            raise serializers.ValidationError(
                {"text_1": f"give one text, or as many texts as text_2 ({len(second)}), not {len(first)}."}
            )
        check_chars(attrs, ("text_1", "text_2"))
        return attrs
