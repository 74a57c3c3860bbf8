"""DRF serializers for POST /tokenize and /detokenize (also under /v1/), in vLLM's shapes.

``/tokenize`` takes either ``{model, prompt, add_special_tokens}`` (a completion prompt)
or ``{model, messages, add_generation_prompt, tools, ...}`` (a chat, rendered exactly as
/v1/chat/completions renders it, so the counts agree); ``return_token_strs`` adds the
tokens' strings. ``/detokenize`` takes ``{model, tokens}``. Any other field is a 400
naming it.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from completions.serializers import MessageSerializer, ToolFieldsSerializer
from completions.tools import validate_tools
from core.fields import KnownFieldsOnly, StrictCharField, is_token_id

CHAT_ONLY = ("add_generation_prompt", "tools", "tool_choice", "parallel_tool_calls", "functions", "function_call")


class TokenizeRequestSerializer(KnownFieldsOnly, ToolFieldsSerializer):
    model = StrictCharField()
    prompt = StrictCharField(required=False, allow_blank=True, trim_whitespace=False)
    messages = MessageSerializer(many=True, required=False, allow_empty=False)
    # vLLM's defaults: True for a prompt, False for messages (the template writes its own).
    add_special_tokens = serializers.BooleanField(required=False, allow_null=True, default=None)
    add_generation_prompt = serializers.BooleanField(required=False, allow_null=True, default=None)
    return_token_strs = serializers.BooleanField(required=False, allow_null=True, default=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        has_prompt, has_messages = "prompt" in attrs, "messages" in attrs
        if has_prompt == has_messages:
            field = "messages" if has_messages else "prompt"
            raise serializers.ValidationError({field: "give either 'prompt' or 'messages', not both and not neither."})
        if has_prompt:
            for name in CHAT_ONLY:
                if attrs.get(name) is not None:
                    raise serializers.ValidationError({name: "only applies with 'messages'."})
            attrs["add_special_tokens"] = attrs.get("add_special_tokens") is not False
            return attrs
        attrs["add_special_tokens"] = bool(attrs.get("add_special_tokens"))
        attrs["add_generation_prompt"] = attrs.get("add_generation_prompt") is not False
        attrs["tool_plan"] = validate_tools(attrs)
        return attrs


class TokenIdsField(serializers.Field):
    """A list of token ids (non-negative integers, never booleans or strings)."""

    def to_internal_value(self, data: Any) -> list[int]:
        if not isinstance(data, list):
            raise serializers.ValidationError("must be an array of token ids.")
        for index, item in enumerate(data):
            if not is_token_id(item):
                raise serializers.ValidationError(f"item {index} is not a token id (a non-negative integer).")
        return list(data)

    def to_representation(self, value: Any) -> Any:
        return value


class DetokenizeRequestSerializer(KnownFieldsOnly, serializers.Serializer):
    model = StrictCharField()
    tokens = TokenIdsField()
