"""The adversarial suite: the known engine failures of ADVERSARIAL.md as labelled replay tasks.

`cdbench replay --source adversarial` replays them. Each family is a generator (below) with the
sizes, ADVERSARIAL.md rows and a sentence of what it checks in datasets/adversarial/families.json;
the schemas and instances are produced here, never stored. Every candidate instance is labelled
by jsonschema (harness/scoring/jsonschema_check: the schema's draft, Draft 2020-12 by default),
never by hand: a schema with no valid instance (a $ref cycle, enum: []) gets invalid instances
only, and a note says why. Some instances are not JSON at all (a raw tab inside a string, the
`{"x":}` of an empty enum, a string left open before `]}`): they are `RawText`, replayed byte for
byte as given, and labelled invalid because `json.loads` refuses them (the judge's first step).

Task ids are `adversarial/<family>-<size>` (e.g. `adversarial/nest_oneOf-d6`), group (source
`adversarial:<family>`) the family, tags `ADVERSARIAL#<row>` for each row it comes from,
`ADVERSARIAL:extra` for the document's extra generators, and `type:<letters>` (C compile, T mask
latency, W wrong mask, K tokenizer, M memory).

ADVERSARIAL.md row -> family (the test checks this table against families.json):

| row | family | what the suite checks |
|---|---|---|
| 1 | nest_oneOf, nest_anyOf, nest_object | compile time against nesting depth; chains at/under/over depth |
| 2 | props_optional, props_required | compile time/memory against property count (compact whitespace) |
| 3 | regex_nth_from_end, regex_bounded | DFA blow-up of `[ab]*a[ab]{k}` and `a{0,n}` |
| 4 | strlist, items_bounds | bounded strings in bounded lists; large minItems/maxItems |
| 5 | nullable_fields | many anyOf[string,null] fields plus an OpenAPI `discriminator` |
| 6 | ref_cycle, ref_cycle_required, ref_chain | $ref cycle without base case (only invalid instances); deep $ref chains |
| 7 | minmax_length, regex_bounded, items_bounds | minLength/maxLength mask latency (mask_us per row); bounded repetition |
| 8 | not applicable | vocabulary-size timing: same schemas with two tokenizers (replay --tokenizer) |
| 9 | control_chars | raw control characters in strings refused, escaped ones accepted |
| 10 | enum_empty | `enum: []`: `{"x":}` and the empty output refused |
| 11 | token_boundary | multi-character tokens straddling a closing quote |
| 12 | property_order | valid objects in another key order (policy refusals) |
| 13 | byte_fallback | byte-token spellings (rare emoji, CJK) in ranges, length bounds, enums |
| 14 | not applicable | EOS configuration: a model/tokenizer-config mechanism, not a schema |
| 15 | not applicable | speculative decoding: needs a draft model and rollback in generation |
| 16 | not applicable | cache growth: a long-lived engine over many schemas with RSS sampling |
| 17 | not applicable | runaway whitespace: a sampling behaviour, needs generation |
| extra | enum_size, long_const, nest_object, props_optional, items_bounds, ref_chain | huge enums, long literals, outlines-core #193 axes |
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError
from .prompts import json_schema_prompt
from .task import Example, Task

REPO_ROOT = Path(__file__).resolve().parents[2]
ADVERSARIAL_DIR = REPO_ROOT / "datasets" / "adversarial"
SOURCE = "adversarial"


class RawText(str):
    """An instance given as exact text, not a JSON value: replayed as is (never re-serialised)."""

    __slots__ = ()

    def __reduce__(self) -> tuple[Any, ...]:  # pickles as RawText into replay workers
        return (RawText, (str(self),))


class AdversarialTask(Task):
    """A Task whose RawText instances are replayed byte for byte; the rest as any schema task."""

    def example_text(self, example: Example) -> str:
        if isinstance(example.value, RawText):
            return str(example.value)
        return super().example_text(example)


def load_spec(directory: str | Path | None = None) -> dict[str, Any]:
    path = Path(directory or ADVERSARIAL_DIR) / "families.json"
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not JSON: {exc.msg} at line {exc.lineno}") from exc
    unknown = sorted(set(spec.get("families", {})) - set(GENERATORS))
    if unknown:
        raise ConfigError(f"{path}: no generator for famil{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)}")
    return spec


# -- labelling: jsonschema decides ---------------------------------------------------------------

def label(schema: Any, value: Any) -> tuple[bool, str]:
    """(valid, note) by the harness's judge: RawText through json.loads then jsonschema; a JSON
    value through jsonschema in the schema's draft. A validator exception (the $ref cycle's
    RecursionError) shows no instance valid: invalid, with the exception as the note."""
    from ..scoring.jsonschema_check import judge, validate_instance

    if isinstance(value, RawText):
        verdict = judge(schema, str(value))
        return verdict.valid, verdict.error
    return validate_instance(schema, value)


# -- helpers -------------------------------------------------------------------------------------

def _text(n: int, words: list[str], salt: int = 0) -> str:
    """n characters of words and spaces, the same for the same (n, salt)."""
    out: list[str] = []
    size, i = 0, salt
    while size < n:
        w = words[(i * 7 + salt) % len(words)]
        out.append(w)
        size += len(w) + 1
        i += 1
    return " ".join(out)[:n]


def _chain(depth: int, key: str, leaf: Any) -> Any:
    value = leaf
    for _ in range(depth):
        value = {key: value}
    return value


Candidates = list[tuple[Any, str]]  # (value or RawText, description)


def _nest(kind: str, d: int, data: dict[str, Any]) -> tuple[Any, Candidates]:
    schema: Any = {"type": "integer"}
    for _ in range(d):
        schema = {kind: [{"type": "object", "properties": {"v": schema}, "required": ["v"],
                          "additionalProperties": False},
                         {"type": "string"}]}
    half = max(1, d // 2)
    cands = [(_chain(d, "v", 7), f"chain of {d} ending in an integer"),
             (_chain(d, "v", "s"), f"chain of {d} ending in a string (the bottom is integer only)"),
             (_chain(half, "v", "s"), f"chain of {half} ending in a string"),
             (_chain(half, "v", 7), f"chain of {half} ending in an integer"),
             (_chain(d + 1, "v", 7), f"chain of {d + 1}: one level too deep"),
             ("top", "a string at the top"),
             ({"v": "s", "w": 1}, "an undeclared key beside v"),
             (True, "a boolean")]
    return schema, cands


def gen_nest_oneOf(size: int, data: dict[str, Any]) -> tuple[Any, Candidates]:
    return _nest("oneOf", size, data)


def gen_nest_anyOf(size: int, data: dict[str, Any]) -> tuple[Any, Candidates]:
    return _nest("anyOf", size, data)


def gen_nest_object(d: int, data: dict[str, Any]) -> tuple[Any, Candidates]:
    schema: Any = {"type": "integer"}
    for _ in range(d):
        schema = {"type": "object", "properties": {"c": schema}, "required": ["c"], "additionalProperties": False}
    return schema, [(_chain(d, "c", 1), f"chain of {d} ending in 1"),
                    (_chain(d, "c", "x"), "the right depth, a string at the bottom"),
                    (_chain(d - 1, "c", 1), "one level short"),
                    (_chain(d + 1, "c", 1), "one level too deep"),
                    ({}, "an empty object")]


def gen_props_optional(n: int, data: dict[str, Any]) -> tuple[Any, Candidates]:
    schema = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(n)},
              "additionalProperties": False}
    return schema, [({}, "no property"),
                     ({"p0": "a"}, "the first property"),
                     ({f"p{n // 2}": "m"}, "the middle property"),
                     ({f"p{n - 1}": "z"}, "the last property"),
                     ({"p0": "a", f"p{n - 1}": "z"}, "the first and last, in declared order"),
                     ({f"p{n}": "x"}, "an undeclared property"),
                     ({"p0": 1}, "a mistyped value")]


def gen_props_required(n: int, data: dict[str, Any]) -> tuple[Any, Candidates]:
    names = [f"p{i}" for i in range(n)]
    schema = {"type": "object", "properties": {k: {"type": "string"} for k in names}, "required": names,
              "additionalProperties": False}
    full = {k: "" for k in names}
    return schema, [(full, "every property"),
                     ({k: "" for k in names[:-1]}, "the last property missing"),
                     ({**full, f"p{n}": ""}, "an undeclared property at the end"),
                     ({**full, names[-1]: 0}, "the last value mistyped")]


def gen_enum_size(n: int, data: dict[str, Any]) -> tuple[Any, Candidates]:
    schema = {"type": "string", "enum": [f"opt_{i}" for i in range(n)]}
    return schema, [("opt_0", "the first value"), (f"opt_{n // 2}", "the middle value"),
                    (f"opt_{n - 1}", "the last value"), ("opt_", "a common prefix"),
                    (f"opt_{n}", "one past the last"), (f"opt_{n - 1}x", "the last value extended")]


def gen_regex_bounded(n: int, data: dict[str, Any]) -> tuple[Any, Candidates]:
    schema = {"type": "string", "pattern": f"^a{{0,{n}}}$"}
    return schema, [("", "empty"), ("a" * (n // 2), "half"), ("a" * n, "exactly n"),
                    ("a" * (n + 1), "n + 1"), ("a" * (n // 2) + "b", "a wrong character")]


def gen_regex_nth_from_end(k: int, data: dict[str, Any]) -> tuple[Any, Candidates]:
    schema = {"type": "string", "pattern": f"^[ab]*a[ab]{{{k}}}$"}
    return schema, [("a" + "b" * k, "a then k b's"), ("ab" * k + "a" + "b" * k, "a long [ab]* prefix, then a and k b's"),
                    ("b" * (k + 1), "no a"), ("ba" + "b" * (k - 1), "the a one place too late"),
                    ("a" + "b" * (k - 1), "one short"), ("a" + "c" * k, "a wrong character")]


def gen_items_bounds(n: int, data: dict[str, Any]) -> tuple[Any, Candidates]:
    lo = n // 2
    schema = {"type": "array", "items": {"type": "integer"}, "minItems": lo, "maxItems": n}
    ints = lambda m: [i % 10 for i in range(m)]  # noqa: E731
    return schema, [(ints(lo), "minItems items"), (ints(n), "maxItems items"), (ints(lo - 1), "one short"),
                    (ints(n + 1), "one too many"), (ints(lo - 1) + ["x"], "a string as the last item")]


def gen_strlist(size: str, data: dict[str, Any]) -> tuple[Any, Candidates]:
    m, l = (int(part[1:]) for part in size.split("-"))
    words = data["words"]
    schema = {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string", "maxLength": l},
                                                       "maxItems": m}},
              "required": ["tags"], "additionalProperties": False}
    full = [_text(l, words, i) for i in range(m)]
    return schema, [({"tags": []}, "an empty list"), ({"tags": full}, f"{m} strings of {l} characters"),
                    ({"tags": full + ["x"]}, "one string too many"),
                    ({"tags": [_text(l + 1, words)]}, "a string one character too long"),
                    ({"tags": ["a", 1]}, "a number in the list")]


def gen_long_const(n: int, data: dict[str, Any]) -> tuple[Any, Candidates]:
    text = _text(n, data["words"])
    schema = {"type": "string", "const": text}
    return schema, [(text, "the literal"), (text[:-1], "one character short"), (text + "x", "one character too many"),
                    (text[:-1] + ("X" if text[-1] != "X" else "Y"), "the last character changed"),
                    ("", "empty")]


def gen_ref_chain(d: int, data: dict[str, Any]) -> tuple[Any, Candidates]:
    defs: dict[str, Any] = {f"r{i}": {"$ref": f"#/$defs/r{i + 1}"} for i in range(d)}
    defs[f"r{d}"] = {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"],
                     "additionalProperties": False}
    schema = {"$ref": "#/$defs/r0", "$defs": defs}
    return schema, [({"x": 1}, "the object at the chain's end"), ({"x": "1"}, "a mistyped value"),
                    ({}, "the required key missing"), (1, "not an object")]


_NO_VALID_NOTE = "no instance is valid"


def gen_ref_cycle(length: int, data: dict[str, Any]) -> tuple[Any, Candidates]:
    defs = {("n" if length == 1 else f"n{i}"): {"$ref": "#/$defs/" + ("n" if length == 1 else f"n{(i + 1) % length}")}
            for i in range(length)}
    schema = {"$ref": "#/$defs/" + ("n" if length == 1 else "n0"), "$defs": defs}
    return schema, [(RawText(""), "the empty output"), ({}, "an empty object"), (1, "a number"),
                    ("x", "a string"), (None, "null"), ([], "an empty array")]


def gen_ref_cycle_required(size: str, data: dict[str, Any]) -> tuple[Any, Candidates]:
    schema = {"$ref": "#/$defs/n", "$defs": {"n": {"type": "object", "properties": {"c": {"$ref": "#/$defs/n"}},
                                                  "required": ["c"]}}}
    return schema, [(RawText(""), "the empty output"), ({}, "no c"), ({"c": {}}, "one level, then no c"),
                    (_chain(3, "c", {}), "three levels, then no c"), ({"c": 1}, "c not an object")]


def gen_enum_empty(size: str, data: dict[str, Any]) -> tuple[Any, Candidates]:
    if size == "prop":
        schema = {"type": "object", "properties": {"x": {"type": "string", "enum": []}}, "required": ["x"]}
        return schema, [(RawText('{"x":}'), 'the regression\'s output {"x":}'),
                        (RawText('{"x": }'), 'the issue\'s {"x": } with a space'),
                        ({"x": ""}, "an empty string"), ({"x": "a"}, "a string"), ({}, "x missing"),
                        (RawText(""), "the empty output")]
    schema = {"enum": []}
    return schema, [(RawText(""), "the empty output"), ("", "an empty string"), (None, "null"), (0, "zero"),
                    ({}, "an empty object")]


def gen_control_chars(size: str, data: dict[str, Any]) -> tuple[Any, Candidates]:
    text: dict[str, Any] = {"type": "string"}
    if size == "maxlen8":
        text["maxLength"] = 8
    elif size == "dotpattern":
        text["pattern"] = "^.*$"
    schema = {"type": "object", "properties": {"text": text}, "required": ["text"], "additionalProperties": False}
    cands: Candidates = [({"text": "ab char"}, "plain text"),
                         ({"text": "a\tb"}, "an escaped tab (\\t)"),
                         ({"text": "a\nb"}, "an escaped newline (\\n)"),
                         ({"text": "a\x7fb"}, "a raw U+007F (DEL is not a JSON control character)")]
    for ch, name in (("\t", "U+0009 tab"), ("\n", "U+000A newline"), ("\x00", "U+0000"), ("\x1f", "U+001F")):
        cands.append((RawText('{"text":"' + ch + 'ab"}'), f"a raw {name} inside the string"))
    return schema, cands


def gen_token_boundary(size: str, data: dict[str, Any]) -> tuple[Any, Candidates]:
    schema = {"type": "object", "properties": {"queries": {"type": "array", "items": {"type": "string"}}},
              "required": ["queries"], "additionalProperties": False}
    return schema, [({"queries": ["hello"]}, "one query"), ({"queries": ["hello", "]"]}, 'a query that is "]"'),
                    ({"queries": ["\"]}", ","]}, "queries holding quote-bracket-brace and a comma"),
                    (RawText('{"queries":["hello","]}'), "the issue's text: a string opened before ]}"),
                    (RawText('{"queries":["hello"]}]'), "a bracket after the end"),
                    (RawText('{"queries":["hello",]}'), "a trailing comma")]


def gen_byte_fallback(size: str, data: dict[str, Any]) -> tuple[Any, Candidates]:
    bf = data["byte_fallback"]
    lo, hi = bf["emoji_range"]
    inside, single = bf["emoji_in_range_byte_fallback"], bf["emoji_in_range_single_token"]
    outside = bf["emoji_outside_byte_fallback"]
    cjk, other = bf["cjk_byte_fallback"], bf["other_byte_fallback"]
    if size == "emoji_range":
        schema = {"type": "string", "pattern": f"^[{lo}-{hi}]+$"}
        return schema, [(single[0], "one single-token emoji"), (inside, "a byte-fallback emoji inside the range"),
                        (single[0] + inside + single[-1], "byte-fallback between single-token emoji"),
                        (outside[0], "a byte-fallback emoji outside the range"),
                        (single[0] + "a", "an ASCII letter after"), ("", "empty")]
    if size == "cjk_range":
        a, b = bf["cjk_range"]
        schema = {"type": "string", "pattern": f"^[{a}-{b}]{{2,4}}$"}
        in_range = [c for c in cjk if a <= c <= b]
        out_range = [c for c in cjk + other if not a <= c <= b]
        return schema, [("".join(in_range[:2]), "two byte-fallback characters"),
                        ("".join(in_range[:4]), "four"), (in_range[0], "one (too few)"),
                        ("".join(in_range[:5]), "five (too many)"),
                        (in_range[0] + out_range[0], "one outside the range")]
    if size == "maxlen3":
        schema = {"type": "string", "minLength": 2, "maxLength": 3}
        return schema, [("".join(cjk[:3]), "three 3-byte characters (9 bytes)"),
                        ("".join(other[1:3]), "two 4-byte characters"),
                        ("".join(cjk[:4]), "four characters"),
                        (outside[0], "one 4-byte character (4 bytes, 1 character)"),
                        ("abcd", "four ASCII letters")]
    values = [outside[0], cjk[-2], outside[1] + outside[0], inside]
    schema = {"enum": values}
    return schema, [(v, "an enum value") for v in values] + [
        (outside[0] * 2, "the first value twice"), (cjk[-2] + cjk[-1], "a value extended"),
        (outside[1], "a prefix of a value")]


def gen_minmax_length(size: str, data: dict[str, Any]) -> tuple[Any, Candidates]:
    lo, hi = (int(x) for x in size.split("-"))
    schema = {"type": "object", "properties": {"description": {"type": "string", "minLength": lo, "maxLength": hi}},
              "required": ["description"], "additionalProperties": False}
    words = data["words"]
    return schema, [({"description": _text(n, words)}, f"{n} characters") for n in (lo - 1, lo, hi, hi + 1)]


def gen_property_order(size: str, data: dict[str, Any]) -> tuple[Any, Candidates]:
    if size == "limit_page":
        schema = {"type": "object", "properties": {"limit": {"type": "number"}, "page": {"type": "number"}}}
        return schema, [({"limit": 10, "page": 0}, "declared order"), ({"page": 0, "limit": 10}, "the issue's order"),
                        ({"page": 0}, "page only"), ({"page": "0", "limit": 10}, "page mistyped")]
    names = [f"k{i}" for i in range(8)]
    schema = {"type": "object", "properties": {k: {"type": "integer"} for k in names}, "required": names[4:],
              "additionalProperties": False}
    full = {k: i for i, k in enumerate(names)}
    return schema, [(full, "declared order"), (dict(reversed(full.items())), "reversed"),
                    ({k: full[k] for k in names[4:]}, "required only"),
                    ({k: full[k] for k in names[4:] + names[:4]}, "required first"),
                    ({k: full[k] for k in names[:4]}, "optional only (required missing)")]


def gen_nullable_fields(n: int, data: dict[str, Any]) -> tuple[Any, Candidates]:
    props: dict[str, Any] = {f"f{i}": {"anyOf": [{"type": "string"}, {"type": "null"}]} for i in range(n)}
    props["items"] = {"type": "array", "items": {
        "discriminator": {"propertyName": "kind"},
        "oneOf": [{"type": "object", "properties": {"kind": {"const": "a"}, "x": {"type": "integer"}},
                   "required": ["kind", "x"]},
                  {"type": "object", "properties": {"kind": {"const": "b"}, "y": {"type": "string"}},
                   "required": ["kind", "y"]}]}}
    schema = {"type": "object", "properties": props, "required": ["f0", "items"], "additionalProperties": False}
    return schema, [({"f0": None, "items": []}, "the required ones"),
                    ({"f0": "s", "f1": None, f"f{n - 1}": "t", "items": [{"kind": "a", "x": 1}, {"kind": "b", "y": "t"}]},
                     "several fields and both item kinds"),
                    ({"f0": 1, "items": []}, "a number where string or null"),
                    ({"items": []}, "f0 missing"),
                    ({"f0": None, "items": [{"kind": "a", "y": "t"}]}, "kind a with b's field"),
                    ({"f0": None, "items": [{"kind": "c"}]}, "an unknown kind")]


GENERATORS: dict[str, Callable[[Any, dict[str, Any]], tuple[Any, Candidates]]] = {
    "nest_oneOf": gen_nest_oneOf, "nest_anyOf": gen_nest_anyOf, "nest_object": gen_nest_object,
    "props_optional": gen_props_optional, "props_required": gen_props_required, "enum_size": gen_enum_size,
    "regex_bounded": gen_regex_bounded, "regex_nth_from_end": gen_regex_nth_from_end,
    "items_bounds": gen_items_bounds, "strlist": gen_strlist, "long_const": gen_long_const,
    "ref_chain": gen_ref_chain, "ref_cycle": gen_ref_cycle, "ref_cycle_required": gen_ref_cycle_required,
    "enum_empty": gen_enum_empty, "control_chars": gen_control_chars, "token_boundary": gen_token_boundary,
    "byte_fallback": gen_byte_fallback, "minmax_length": gen_minmax_length, "property_order": gen_property_order,
    "nullable_fields": gen_nullable_fields,
}


# -- tasks ---------------------------------------------------------------------------------------

def task_id(family: str, prefix: str, size: Any) -> str:
    return f"{SOURCE}/{family}-{prefix}{size}"


def _tags(fam: dict[str, Any]) -> list[str]:
    tags = [f"ADVERSARIAL#{r}" for r in fam.get("rows", [])]
    if fam.get("extra"):
        tags.append("ADVERSARIAL:extra")
    return tags + [f"type:{fam['type']}"]


def build_task(family: str, size: Any, spec: dict[str, Any]) -> AdversarialTask:
    """One family at one size: its schema, and every candidate labelled by jsonschema."""
    fam = spec["families"][family]
    schema, candidates = GENERATORS[family](size, spec)
    examples = []
    for value, description in candidates:
        valid, note = label(schema, value)
        examples.append(Example(value, valid, f"{description}; jsonschema: {note}" if note else description))
    if not any(e.valid for e in examples):
        examples = [Example(e.value, e.valid, f"{e.description} [{_NO_VALID_NOTE}]") for e in examples]
    return AdversarialTask(id=task_id(family, fam.get("size", ""), size), kind="json_schema",
                           source=f"{SOURCE}:{family}", prompt=json_schema_prompt(schema), schema=schema,
                           examples=examples, tags=_tags(fam))


def _load(directory: str | Path | None) -> list[AdversarialTask]:
    spec = load_spec(directory)
    return [build_task(family, size, spec) for family, fam in spec["families"].items() for size in fam["sizes"]]


def load_adversarial(groups: list[str] | None = None, directory: str | Path | None = None) -> list[Task]:
    """Every family at every size (only `groups`' families when given), in families.json's order."""
    tasks: list[Task] = list(_load(directory))
    if groups:
        known = {t.source.split(":", 1)[1] for t in tasks}
        unknown = [g for g in groups if g not in known]
        if unknown:
            raise ConfigError(f"unknown adversarial family '{unknown[0]}' (have: {', '.join(sorted(known))})")
        tasks = [t for t in tasks if t.source.split(":", 1)[1] in groups]
    return tasks


def not_applicable(directory: str | Path | None = None) -> dict[int, str]:
    """ADVERSARIAL.md rows that are not JSON-schema/grammar inputs, with the mechanism each needs."""
    return {int(k): v for k, v in load_spec(directory).get("not_applicable", {}).items()}
