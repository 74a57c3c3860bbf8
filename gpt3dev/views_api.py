"""The one shape every API view has: parse JSON, validate with a serializer, call a service."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from gpt3dev.errors import validation_error
from gpt3dev.http import parse_json_body


def validated(request, serializer_class: type[serializers.Serializer]) -> dict[str, Any]:
    """The request body, validated; a 400/413/415 APIError names what is wrong."""
    serializer = serializer_class(data=parse_json_body(request))
    if not serializer.is_valid():
        raise validation_error(serializer.errors)
    return serializer.validated_data
