"""Validate answers against OpenAI's own OpenAPI schemas.

The schemas the tests use are vendored in ``tests/openai_spec/schemas.json`` (with
OpenAI's MIT licence next to it), so a fresh clone runs every schema check. To vendor
more, or refresh them from a copy of the full spec (github.com/openai/openai-openapi):

    python -m tests.openai_schema path/to/openapi.json SchemaName ...

which keeps the schemas already vendored, adds the named ones and everything they
reference, and rewrites the file.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

VENDORED = Path(__file__).resolve().parent / "openai_spec" / "schemas.json"
REF_PREFIX = "#/components/schemas/"


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
    spec = _nullable_to_union(json.loads(VENDORED.read_text()))
    return Registry().with_resource("openapi.json", Resource.from_contents(spec, default_specification=DRAFT202012))


def assert_matches_schema(instance: object, schema_name: str) -> None:
    """Fail with every violation if ``instance`` is not a valid ``schema_name``."""
    schemas = json.loads(VENDORED.read_text())["components"]["schemas"]
    assert schema_name in schemas, f"{schema_name} is not vendored: see `python -m tests.openai_schema`"
    validator = Draft202012Validator(
        {"$ref": f"openapi.json#/components/schemas/{schema_name}"}, registry=_registry()
    )
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:10])


def _references(node) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(REF_PREFIX):
            found.add(ref[len(REF_PREFIX):])
        for value in node.values():
            found |= _references(value)
    elif isinstance(node, list):
        for item in node:
            found |= _references(item)
    return found


def vendor(spec_path: Path, names: list[str]) -> list[str]:
    """Write the named schemas (and all they reference) from the full spec, keeping
    those already vendored; returns the names written."""
    everything = json.loads(spec_path.read_text())["components"]["schemas"]
    wanted = set(names)
    if VENDORED.exists():
        wanted |= set(json.loads(VENDORED.read_text())["components"]["schemas"])
    todo, kept = list(wanted), {}
    while todo:
        name = todo.pop()
        if name in kept:
            continue
        kept[name] = everything[name]
        todo.extend(_references(kept[name]) - kept.keys())
    VENDORED.write_text(json.dumps({"components": {"schemas": dict(sorted(kept.items()))}}, indent=1) + "\n")
    return sorted(kept)


if __name__ == "__main__":
    written = vendor(Path(sys.argv[1]), sys.argv[2:])
    print(f"{len(written)} schemas in {VENDORED}")
