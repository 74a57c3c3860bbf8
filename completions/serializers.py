"""DRF serializers for /v1/completions and /v1/chat/completions requests.

Field names and ranges are OpenAI's (see shared/OPENAI_CONTRACT.md). Each error names
its field, which the error handler puts in ``param``. Fields OpenAI accepts but that do
not change generation here (``user``, ``metadata``, ``store``, ...) are accepted and
ignored; fields that would change the answer and are not supported are a 400, never
ignored silently.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from completions.structured import GuidedFieldsMixin, ResponseFormatSerializer, constraint_fields
from completions.tools import validate_tools
from core.fields import KnownFieldsOnly, StrictCharField, strings_or_token_ids

MAX_STOP_SEQUENCES = 4


class PromptField(serializers.Field):
    """A string, a list of strings, a list of token ids, or a list of token-id lists.

    Always returns a list of prompts, each a ``str`` or a ``list[int]``.
    """

    default_error_messages = {
        "invalid": "must be a string, an array of strings, an array of token ids or an array of token-id arrays.",
        "empty": "must not be empty.",
    }

    def to_internal_value(self, data: Any) -> list[str | list[int]]:
        if isinstance(data, str):
            return [data]
        if not isinstance(data, list):
            self.fail("invalid")
        if not data:
            self.fail("empty")
        prompts = strings_or_token_ids(data)
        if prompts is None:
            self.fail("invalid")
        return prompts

    def to_representation(self, value: Any) -> Any:
        return value


class StopField(serializers.Field):
    """``stop``: a string or at most four non-empty strings; returns a tuple."""

    def to_internal_value(self, data: Any) -> tuple[str, ...]:
        if data is None:
            return ()
        items = [data] if isinstance(data, str) else data
        if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
            raise serializers.ValidationError("must be a string or an array of strings.")
        if len(items) > MAX_STOP_SEQUENCES:
            raise serializers.ValidationError(f"may hold at most {MAX_STOP_SEQUENCES} sequences.")
        if any(s == "" for s in items):
            raise serializers.ValidationError("stop sequences must not be empty strings.")
        return tuple(dict.fromkeys(items))

    def to_representation(self, value: Any) -> Any:
        return value


class LogitBiasField(serializers.Field):
    """``logit_bias``: token id (as a string) -> bias in [-100, 100]; returns pairs."""

    def to_internal_value(self, data: Any) -> tuple[tuple[int, float], ...]:
        if data is None:
            return ()
        if not isinstance(data, dict):
            raise serializers.ValidationError("must be an object mapping token ids to biases.")
        pairs = []
        for key, bias in data.items():
            try:
                token_id = int(key)
            except (TypeError, ValueError):
                raise serializers.ValidationError(f"key '{key}' is not a token id.") from None
            if token_id < 0:
                raise serializers.ValidationError(f"key '{key}' is not a token id.")
            if isinstance(bias, bool) or not isinstance(bias, (int, float)) or not -100 <= bias <= 100:
                raise serializers.ValidationError(f"the bias of token {key} must be a number from -100 to 100.")
            pairs.append((token_id, float(bias)))
        return tuple(pairs)

    def to_representation(self, value: Any) -> Any:
        return value


class StreamOptionsSerializer(KnownFieldsOnly, serializers.Serializer):
    include_usage = serializers.BooleanField(required=False, default=False)
    continuous_usage_stats = serializers.BooleanField(required=False, default=False)


class SamplingRequestSerializer(KnownFieldsOnly, GuidedFieldsMixin, serializers.Serializer):
    """The fields both generation endpoints share (the constrained-output ones come from
    :class:`completions.structured.GuidedFieldsMixin`). Any other field is a 400 naming
    it, except OpenAI's bookkeeping fields, which cannot change the answer."""

    ignored_fields = frozenset({"metadata", "store", "service_tier", "prompt_cache_key", "safety_identifier"})

    model = StrictCharField()
    max_tokens = serializers.IntegerField(required=False, allow_null=True, min_value=0)
    temperature = serializers.FloatField(required=False, allow_null=True, min_value=0, max_value=2)
    top_p = serializers.FloatField(required=False, allow_null=True, min_value=0, max_value=1)
    n = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=128)
    stop = StopField(required=False, allow_null=True)
    presence_penalty = serializers.FloatField(required=False, allow_null=True, min_value=-2, max_value=2)
    frequency_penalty = serializers.FloatField(required=False, allow_null=True, min_value=-2, max_value=2)
    logit_bias = LogitBiasField(required=False, allow_null=True)
    seed = serializers.IntegerField(required=False, allow_null=True, min_value=-(2**63), max_value=2**64 - 1)
    stream = serializers.BooleanField(required=False, allow_null=True, default=False)
    stream_options = StreamOptionsSerializer(required=False, allow_null=True)
    user = serializers.CharField(required=False, allow_null=True, allow_blank=True)
    # Extensions vLLM users expect (documented in docs/api/sampling.md).
    top_k = serializers.IntegerField(required=False, allow_null=True, min_value=-1)
    min_p = serializers.FloatField(required=False, allow_null=True, min_value=0, max_value=1)
    repetition_penalty = serializers.FloatField(required=False, allow_null=True, min_value=0.01, max_value=10)
    min_tokens = serializers.IntegerField(required=False, allow_null=True, min_value=0)
    ignore_eos = serializers.BooleanField(required=False, allow_null=True, default=False)
    stop_token_ids = serializers.ListField(
        child=serializers.IntegerField(min_value=0), required=False, allow_null=True, max_length=64
    )
    include_stop_str_in_output = serializers.BooleanField(required=False, allow_null=True, default=False)
    skip_special_tokens = serializers.BooleanField(required=False, allow_null=True, default=True)

    def validate_top_p(self, value: float | None) -> float | None:
        if value is not None and value <= 0:
            raise serializers.ValidationError("must be greater than 0 and at most 1.")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        if attrs.get("stream_options") is not None and not attrs.get("stream"):
            raise serializers.ValidationError({"stream_options": "is only allowed when stream is true."})
        return attrs


class CompletionRequestSerializer(SamplingRequestSerializer):
    prompt = PromptField()
    best_of = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=128)
    logprobs = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=5)
    echo = serializers.BooleanField(required=False, allow_null=True, default=False)
    suffix = serializers.CharField(required=False, allow_null=True, allow_blank=True, trim_whitespace=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        if attrs.get("suffix"):
            raise serializers.ValidationError(
                {"suffix": "is not supported: these models are not trained to insert text before a suffix."}
            )
        n = attrs.get("n") or 1
        best_of = attrs.get("best_of")
        if best_of is not None:
            if best_of < n:
                raise serializers.ValidationError({"best_of": f"must be at least n ({n})."})
            if attrs.get("stream") and best_of > 1:
                raise serializers.ValidationError(
                    {"best_of": "cannot be used with stream (the best are only known at the end)."})
        if attrs.get("max_tokens") == 0 and not attrs.get("echo"):
            raise serializers.ValidationError({"max_tokens": "must be at least 1 (0 is allowed only with echo)."})
        return attrs


class ContentPartSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=["text"], error_messages={
        "invalid_choice": "only text content parts are supported; '{input}' is not."
    })
    text = serializers.CharField(allow_blank=True, trim_whitespace=False)


ROLES = ("system", "developer", "user", "assistant", "tool")


class ToolCallFunctionSerializer(serializers.Serializer):
    name = StrictCharField()
    arguments = StrictCharField(allow_blank=True, trim_whitespace=False)


class ToolCallSerializer(serializers.Serializer):
    id = StrictCharField(required=False, allow_blank=True, default="")
    type = serializers.ChoiceField(choices=["function"], required=False, default="function")
    function = ToolCallFunctionSerializer()


class MessageSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=ROLES)
    content = serializers.JSONField(required=False, allow_null=True)
    name = serializers.CharField(required=False, allow_blank=True)
    tool_call_id = serializers.CharField(required=False, allow_blank=True)
    tool_calls = ToolCallSerializer(many=True, required=False, allow_null=True)
    function_call = ToolCallFunctionSerializer(required=False, allow_null=True)  # the older name

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        content = attrs.get("content")
        calls = [
            {"id": c["id"], "name": c["function"]["name"], "arguments": c["function"]["arguments"]}
            for c in attrs.get("tool_calls") or []
        ]
        if attrs.get("function_call"):
            calls.append({"id": "", **attrs["function_call"]})
        if calls and attrs["role"] != "assistant":
            raise serializers.ValidationError({"tool_calls": "only assistant messages carry tool calls."})
        if isinstance(content, str):
            text = content
        elif isinstance(content, list) and content:
            parts = ContentPartSerializer(data=content, many=True)
            if not parts.is_valid():
                raise serializers.ValidationError({"content": parts.errors})
            text = "\n".join(part["text"] for part in parts.validated_data)
        elif content is None and attrs["role"] == "assistant":
            text = ""
        else:
            raise serializers.ValidationError({"content": "must be a string or a non-empty array of text parts."})
        role = "system" if attrs["role"] == "developer" else attrs["role"]
        message: dict[str, Any] = {"role": role, "content": text}
        if calls:
            message["tool_calls"] = calls
        if role == "tool":
            message["tool_call_id"] = attrs.get("tool_call_id", "")
        return message


class ToolFieldsSerializer(serializers.Serializer):
    """The tool fields of a chat request (``/tokenize`` takes them too, to render tools
    as chat does); ``completions.tools.validate_tools`` checks what they hold."""

    tools = serializers.JSONField(required=False, allow_null=True)
    tool_choice = serializers.JSONField(required=False, allow_null=True)
    parallel_tool_calls = serializers.BooleanField(required=False, allow_null=True)
    functions = serializers.JSONField(required=False, allow_null=True)
    function_call = serializers.JSONField(required=False, allow_null=True)


class ChatCompletionRequestSerializer(ToolFieldsSerializer, SamplingRequestSerializer):
    messages = MessageSerializer(many=True, allow_empty=False)
    max_completion_tokens = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    logprobs = serializers.BooleanField(required=False, allow_null=True, default=False)
    top_logprobs = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=20)
    response_format = ResponseFormatSerializer(required=False, allow_null=True)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        attrs["tool_plan"] = validate_tools(attrs)
        vllm = [f for f in constraint_fields(attrs) if f != "response_format"]
        if attrs["tool_plan"] is not None and vllm:
            raise serializers.ValidationError(
                {vllm[0]: "cannot be combined with tools; use response_format for the text reply."})
        if attrs.get("max_tokens") == 0:
            raise serializers.ValidationError({"max_tokens": "must be at least 1."})
        if attrs.get("top_logprobs") is not None and not attrs.get("logprobs"):
            raise serializers.ValidationError({"top_logprobs": "requires logprobs to be true."})
        return attrs
