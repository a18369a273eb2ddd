"""Checks for the built-in JSON Schema suite in datasets/builtin/.

Each file is {"id", "prompt", "schema", "valid", "invalid"}; every valid
instance must validate, every invalid instance must fail for one clear
reason, and the suite as a whole must cover the feature list below.
"""

import json
import re
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

DATASET_DIR = Path(__file__).resolve().parent.parent / "datasets" / "builtin"
FILES = sorted(DATASET_DIR.glob("*.json"))
DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"

# Keywords that constrained-decoding engines often lack: at most 2 schemas may use them.
RARE_KEYWORDS = {
    "not", "if", "then", "else", "dependentRequired", "dependentSchemas",
    "uniqueItems", "patternProperties", "unevaluatedProperties", "unevaluatedItems",
}
# Formats that jsonschema checks without optional extra packages; invalid
# examples that fail because of a format must use one of these so the test
# does not depend on rfc3339-validator / rfc3987 being installed.
FORMATS_CHECKED_WITHOUT_EXTRAS = {"date", "email", "ipv4", "uuid"}
REQUIRED_FORMATS = {"date", "date-time", "email", "uuid", "ipv4", "uri"}
MIN_SCHEMAS_PER_FEATURE = 2


def _load(path):
    with path.open(encoding="utf-8") as f:
        return json.load(f)


TASKS = {p.stem: _load(p) for p in FILES}


def _validator(schema):
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def _walk(node):
    """Yield every dict inside a schema (including $defs), recursively."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _subschemas(node):
    """Yield every subschema (dict) in a schema, skipping non-schema payloads
    such as enum/const values and the names listed in 'required'."""
    if not isinstance(node, dict):
        return
    yield node
    for key, value in node.items():
        if key in ("enum", "const", "required", "examples", "default"):
            continue
        if key in ("properties", "$defs", "patternProperties", "dependentSchemas"):
            for sub in value.values():
                yield from _subschemas(sub)
        elif key in ("anyOf", "oneOf", "allOf", "prefixItems"):
            for sub in value:
                yield from _subschemas(sub)
        elif isinstance(value, dict):
            yield from _subschemas(value)


def _features(schema):
    """Return the set of coverage features present in one schema."""
    found = set()
    for sub in _subschemas(schema):
        types = sub.get("type")
        types = types if isinstance(types, list) else [types]
        if "properties" in sub and sub is not schema:
            found.add("nested properties")
        for kw in ("minItems", "maxItems", "enum", "const", "pattern", "format",
                   "minimum", "maximum", "exclusiveMinimum", "multipleOf", "$ref",
                   "$defs", "anyOf", "oneOf", "required", "minLength", "maxLength"):
            if kw in sub:
                found.add(kw)
        if "format" in sub:
            found.add("format:" + sub["format"])
        if sub.get("additionalProperties") is False:
            found.add("additionalProperties false")
        if "properties" in sub and set(sub["properties"]) - set(sub.get("required", [])):
            found.add("optional property")
        for t in ("boolean", "integer", "null", "number", "string", "array", "object"):
            if t in types:
                found.add("type:" + t)
        for rare in RARE_KEYWORDS & set(sub):
            found.add("rare:" + rare)
    return found


REQUIRED_FEATURES = [
    "nested properties", "minItems", "maxItems", "enum", "const", "pattern", "format",
    "minimum", "maximum", "exclusiveMinimum", "multipleOf", "$ref", "$defs", "anyOf",
    "oneOf", "additionalProperties false", "required", "optional property",
    "minLength", "maxLength", "type:boolean", "type:integer", "type:null",
] + ["format:" + f for f in sorted(REQUIRED_FORMATS)]


def _resolve(schema, root):
    while isinstance(schema, dict) and "$ref" in schema:
        ref = schema["$ref"]
        assert ref.startswith("#/"), f"only local refs expected, got {ref}"
        node = root
        for part in ref[2:].split("/"):
            node = node[part]
        schema = node
    return schema


def _check_order(instance, schema, root, validator, where="$"):
    """Object keys in an instance must follow the order of 'properties'."""
    schema = _resolve(schema, root)
    if not isinstance(schema, dict):
        return
    for key in ("oneOf", "anyOf"):
        for branch in schema.get(key, []):
            if validator.evolve(schema=branch).is_valid(instance):
                _check_order(instance, branch, root, validator, where)
    if isinstance(instance, dict) and "properties" in schema:
        declared = list(schema["properties"])
        present = [k for k in instance if k in schema["properties"]]
        assert present == sorted(present, key=declared.index), (
            f"{where}: keys {present} not in declared order {declared}")
        for k in present:
            _check_order(instance[k], schema["properties"][k], root, validator, f"{where}.{k}")
    if isinstance(instance, list) and "items" in schema:
        for i, item in enumerate(instance):
            _check_order(item, schema["items"], root, validator, f"{where}[{i}]")


def _depth(value):
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def test_at_least_32_files():
    assert len(FILES) >= 32, f"only {len(FILES)} task files in {DATASET_DIR}"


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_task_file(path):
    task = _load(path)
    assert set(task) == {"id", "prompt", "schema", "valid", "invalid"}
    assert task["id"] == path.stem
    assert re.fullmatch(r"[a-z][a-z0-9_]*", task["id"])
    assert isinstance(task["prompt"], str) and 15 <= len(task["prompt"]) <= 200

    schema = task["schema"]
    assert schema.get("$schema") == DRAFT_2020_12
    assert schema.get("type") == "object"
    assert 2 <= len(schema.get("properties", {})) <= 8
    Draft202012Validator.check_schema(schema)

    # Generation-budget constraints: every array is bounded by maxItems <= 5.
    for sub in _walk(schema):
        if sub.get("type") == "array":
            assert 0 < sub.get("maxItems", 99) <= 5, f"unbounded array in {task['id']}"
        if "maxLength" in sub:
            assert sub["maxLength"] <= 60

    validator = _validator(schema)

    assert len(task["valid"]) >= 2
    for instance in task["valid"]:
        errors = [e.message for e in validator.iter_errors(instance)]
        assert not errors, f"valid instance rejected: {errors} :: {instance}"
        for name in schema.get("required", []):
            assert name in instance
        _check_order(instance, schema, schema, validator)
        assert _depth(instance) <= 3, f"instance nested too deep: {instance}"
        compact = json.dumps(instance, separators=(",", ":"))
        assert len(compact) <= 520, f"instance too long ({len(compact)} chars)"

    assert len(task["invalid"]) >= 2
    for case in task["invalid"]:
        assert set(case) == {"data", "why"}
        assert isinstance(case["why"], str) and case["why"]
        errors = list(validator.iter_errors(case["data"]))
        assert errors, f"invalid instance accepted ({case['why']}): {case['data']}"
        assert len(errors) == 1, (
            f"invalid instance should fail for one reason, got "
            f"{[e.message for e in errors]} ({case['why']})")
        err = errors[0]
        assert err.validator in case["why"], (
            f"'why' ({case['why']}) does not name the failing keyword {err.validator}")
        if err.validator == "format":
            assert err.validator_value in FORMATS_CHECKED_WITHOUT_EXTRAS


def test_feature_coverage():
    counts = {feature: [] for feature in REQUIRED_FEATURES}
    for task_id, task in TASKS.items():
        found = _features(task["schema"])
        for feature in REQUIRED_FEATURES:
            if feature in found:
                counts[feature].append(task_id)
    missing = {f: ids for f, ids in counts.items() if len(ids) < MIN_SCHEMAS_PER_FEATURE}
    assert not missing, f"features covered by fewer than {MIN_SCHEMAS_PER_FEATURE} schemas: {missing}"


def test_rare_keywords_limited():
    users = [tid for tid, task in TASKS.items()
             if any(f.startswith("rare:") for f in _features(task["schema"]))]
    assert len(users) <= 2, f"rarely-supported keywords used in too many schemas: {users}"


@pytest.mark.parametrize("fmt,bad", [
    ("date", "2024-13-45"),
    ("email", "user.example.com"),
    ("ipv4", "256.1.1.1"),
    ("uuid", "not-a-uuid"),
])
def test_format_checker_rejects_bad_values(fmt, bad):
    assert not _validator({"type": "string", "format": fmt}).is_valid(bad)


@pytest.mark.parametrize("fmt,bad,module", [
    ("date-time", "2024-13-45T25:00:00Z", "rfc3339_validator"),
    ("uri", "not a uri", "rfc3987"),
])
def test_optional_format_checks(fmt, bad, module):
    pytest.importorskip(module)
    assert not _validator({"type": "string", "format": fmt}).is_valid(bad)
