"""Validate answers against OpenAI's own OpenAPI spec (../shared/openai-openapi)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_PATH = Path(__file__).resolve().parents[1].parent / "shared" / "openai-openapi" / "openapi.json"


def _nullable_to_union(node):
    """OpenAPI 3.0's `nullable: true` is a type union in JSON Schema 2020-12."""
    if isinstance(node, dict):
        node = {key: _nullable_to_union(value) for key, value in node.items()}
        if node.pop("nullable", False) and "type" in node:
            types = node["type"] if isinstance(node["type"], list) else [node["type"]]
            node["type"] = [*types, "null"]
            if "enum" in node:
                node["enum"] = [*node["enum"], None]
        return node
    if isinstance(node, list):
        return [_nullable_to_union(item) for item in node]
    return node


@functools.cache
def _registry() -> Registry:
    spec = _nullable_to_union(json.loads(SPEC_PATH.read_text()))
    return Registry().with_resource("openapi.json", Resource.from_contents(spec, default_specification=DRAFT202012))


def assert_matches_schema(instance: object, schema_name: str) -> None:
    """Fail with every violation if ``instance`` is not a valid ``schema_name``."""
    if not SPEC_PATH.exists():
        pytest.skip(f"OpenAI's spec is not at {SPEC_PATH}")
    validator = Draft202012Validator(
        {"$ref": f"openapi.json#/components/schemas/{schema_name}"}, registry=_registry()
    )
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:10])
