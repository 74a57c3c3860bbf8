"""Validate Responses API answers and events against OpenAI's own schemas.

``openai_schemas.json`` holds ``Response``, ``ResponseStreamEvent``, ``ResponseItemList``
and ``TokenCountsResource`` from OpenAI's OpenAPI spec (github.com/openai/openai-openapi,
MIT: see tests/openai_spec/LICENSE) and everything they reference, unchanged. It is kept
apart from tests/openai_spec/schemas.json because the Responses schemas are large.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests.openai_schema import _nullable_to_union

VENDORED = Path(__file__).resolve().parent / "openai_schemas.json"


@functools.cache
def _validator(name: str) -> Draft202012Validator:
    spec = _nullable_to_union(json.loads(VENDORED.read_text()))
    registry = Registry().with_resource("spec.json", Resource.from_contents(spec, default_specification=DRAFT202012))
    return Draft202012Validator({"$ref": f"spec.json#/components/schemas/{name}"}, registry=registry)


def assert_matches(instance: object, name: str) -> None:
    errors = sorted(_validator(name).iter_errors(instance), key=lambda e: list(e.path))
    assert not errors, f"{name}: " + "\n".join(f"{list(e.path)}: {e.message[:300]}" for e in errors[:5])


@functools.cache
def _event_schemas() -> dict[str, str]:
    """Each event type's own schema among ``ResponseStreamEvent``'s variants."""
    schemas = json.loads(VENDORED.read_text())["components"]["schemas"]
    names = [ref["$ref"].rsplit("/", 1)[-1] for ref in schemas["ResponseStreamEvent"]["anyOf"]]
    return {schemas[name]["properties"]["type"]["enum"][0]: name for name in names
            if "enum" in schemas[name].get("properties", {}).get("type", {})}


def assert_event(event: dict) -> None:
    """``event`` is a valid ``ResponseStreamEvent``; checked against its own type's
    variant, so a failure says which field is wrong."""
    name = _event_schemas().get(event.get("type"))
    assert name is not None, f"{event.get('type')!r} is not a ResponseStreamEvent type"
    assert_matches(event, name)
    assert_matches(event, "ResponseStreamEvent")
