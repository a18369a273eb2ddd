"""Feature tags: the JSON Schema keywords a schema uses, found by a static walk.

Every JSON task carries them so any metric can be broken down per feature, as
JSONSchemaBench's feature checklist does. Property names, enum/const values, examples and
defaults are data, not keywords, and are not walked as schemas.
"""
from __future__ import annotations

from typing import Any

# Keywords whose value maps names to subschemas (walk the values, not the keys).
_SCHEMA_MAPS = {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}
# Keywords whose value is a subschema or a list of subschemas.
_SCHEMA_VALUES = {"items", "additionalItems", "additionalProperties", "unevaluatedItems", "unevaluatedProperties",
                  "contains", "propertyNames", "not", "if", "then", "else", "allOf", "anyOf", "oneOf", "prefixItems"}
# Keywords whose value is plain data.
_DATA = {"enum", "const", "default", "examples", "required", "description", "title", "$comment"}


def schema_keywords(schema: Any) -> list[str]:
    found: set[str] = set()

    def walk(node: Any) -> None:
        if not isinstance(node, dict):
            return
        for key, value in node.items():
            found.add(key)
            if key in _DATA:
                continue
            if key in _SCHEMA_MAPS and isinstance(value, dict):
                for sub in value.values():
                    walk(sub)
            elif key in _SCHEMA_VALUES:
                for sub in value if isinstance(value, list) else [value]:
                    walk(sub)
            elif key == "dependencies" and isinstance(value, dict):
                for sub in value.values():
                    walk(sub)
        if node.get("additionalProperties") is False:
            found.add("additionalProperties:false")

    walk(schema)
    return sorted(found)
