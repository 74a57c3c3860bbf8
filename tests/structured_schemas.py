"""JSON schemas the structured-output tests generate against: enums, nested objects,
arrays with minItems/maxItems, anyOf/nullable, integer ranges and
``additionalProperties: false``."""

from __future__ import annotations

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "role": {"enum": ["engineer", "artist", "doctor"]},
        "skills": {"type": "array", "items": {"type": "string", "maxLength": 20}, "minItems": 1, "maxItems": 3},
        "address": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 30},
                "zip": {"anyOf": [{"type": "string", "pattern": "^[0-9]{5}$"}, {"type": "null"}]},
            },
            "required": ["city", "zip"],
            "additionalProperties": False,
        },
    },
    "required": ["name", "age", "role", "skills", "address"],
    "additionalProperties": False,
}

SCORES = {
    "type": "object",
    "properties": {
        "verdict": {"type": "string", "enum": ["yes", "no", "unsure"]},
        "confidence": {"type": "integer", "minimum": 1, "maximum": 5},
        "notes": {"type": ["string", "null"], "maxLength": 30},
        "points": {"type": "array", "items": {"type": "integer", "minimum": -3, "maximum": 3},
                   "minItems": 2, "maxItems": 4},
    },
    "required": ["verdict", "confidence", "notes", "points"],
    "additionalProperties": False,
}

SCHEMAS = {"person": PERSON, "scores": SCORES}
