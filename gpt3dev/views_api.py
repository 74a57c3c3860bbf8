"""The one shape every API view has: parse JSON, validate with a serializer, call a service."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from gpt3dev.accesslog import note_request_body
from gpt3dev.errors import validation_error
from gpt3dev.http import parse_json_body


def validated(request, serializer_class: type[serializers.Serializer]) -> dict[str, Any]:
    """The request body, validated; a 400/413/415 APIError names what is wrong."""
    body = parse_json_body(request)
    note_request_body(body)  # the access log's model (and prompt, when asked for)
    serializer = serializer_class(data=body)
    if not serializer.is_valid():
        raise validation_error(serializer.errors)
    return serializer.validated_data
