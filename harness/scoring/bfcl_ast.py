"""Does a function call match a ground-truth call? BFCL's AST-checker rules for one call (Python).

The rules, as the Berkeley Function Calling Leaderboard states them for its `simple` category
(gorilla, berkeley-function-call-leaderboard, eval_checker/ast_eval): written here from those
rules, not from its code.

- the call names the function (exact name);
- every parameter the function requires is present;
- no parameter outside the function's properties or the possible answer ("unexpected");
- each value has the declared type: string, integer, float, boolean, array, tuple (a list),
  dict, any (a string). An int is accepted for a float (Python would convert it); a bool is
  not an int. Arrays are checked one level deep against their `items` type;
- the value is one of the possible answers. Strings compare after normalisation (spaces and
  `,./-_*^` removed, lower case, `'` read as `"`), lists element-wise after the same
  normalisation, dicts key by key, lists of dicts in order; other values by equality;
- a parameter of the possible answer that the call leaves out must be optional there
  (its list of possible answers contains "").

A value whose type is that of the possible answers but not the declared one counts as a
variable (BFCL's term): it is compared by plain equality, without the special cases above.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

PYTHON_TYPES: dict[str, type] = {"string": str, "integer": int, "float": float, "boolean": bool,
                                 "array": list, "tuple": list, "dict": dict, "any": str}
_NORMALISE = re.compile(r"[ ,./\-_*^]")


@dataclass(frozen=True)
class Verdict:
    valid: bool
    error_type: str = ""
    message: str = ""


OK = Verdict(True)


def normalise(text: str) -> str:
    """BFCL's string normalisation: `April 1, 2024` and `april 1 2024` compare equal."""
    return _NORMALISE.sub("", text).lower().replace("'", '"')


def _norm(value: Any) -> Any:
    return normalise(value) if isinstance(value, str) else value


def _answer_type(possible: list) -> type | None:
    """The type of the first possible answer that is not the optional marker ""."""
    return next((type(a) for a in possible if a != ""), None)


def _type_ok(value: Any, expected: type, items: type | None, possible: list) -> tuple[bool, bool]:
    """(type accepted, value is a 'variable')."""
    answer_type = _answer_type(possible)
    variable = answer_type is not None and answer_type is not expected
    if type(value) is expected:
        if items is None:
            return True, variable
        for option in possible:  # one level deep: every element against the items type
            if not isinstance(option, list) or all(_type_ok(v, items, None, option)[0] for v in value):
                return True, variable
        return False, variable
    if answer_type is not None and type(value) is answer_type:
        return True, True
    return False, variable


def _dict_ok(value: dict, possible: list) -> bool:
    for option in possible:
        if option == "":
            continue
        if any(k not in option or _norm(v) not in [_norm(a) for a in option[k]] for k, v in value.items()):
            continue
        if all(k in value or "" in answers for k, answers in option.items()):
            return True
    return False


def _value_ok(value: Any, expected: type, items: type | None, possible: list) -> bool:
    if expected is dict:
        return _dict_ok(value, possible)
    if expected is list and items is dict:
        return any(isinstance(o, list) and len(o) == len(value) and all(_dict_ok(v, [d]) for v, d in zip(value, o))
                   for o in possible)
    if expected is str:
        return normalise(value) in [normalise(a) for a in possible if isinstance(a, str)]
    if expected is list:
        # an option that is a string is read element by element, as BFCL does ("" matches [])
        return [_norm(v) for v in value] in [[_norm(a) for a in o] for o in possible if isinstance(o, (list, str))]
    return value in possible


def check_param(name: str, value: Any, spec: dict, possible: list) -> Verdict:
    """One parameter's value against its declared type and its possible answers."""
    declared = spec.get("type", "any")
    expected = PYTHON_TYPES.get(declared, str)
    items = PYTHON_TYPES.get(spec.get("items", {}).get("type", "any"), str) if declared in ("array", "tuple") else None
    if declared == "float" and type(value) is int:
        value = float(value)
    ok, variable = _type_ok(value, expected, items, possible)
    if not ok:
        return Verdict(False, "type_error", f"{name}: expected {declared}, got {type(value).__name__}")
    if variable:
        good = value in possible
    else:
        good = _value_ok(value, expected, items, possible)
    return OK if good else Verdict(False, "value_error", f"{name}: {value!r} is not one of {possible!r}")


def check_call(function: dict, call: dict, possible_answer: dict) -> Verdict:
    """`call` is {function name: {param: value}}; `possible_answer` is {function name: {param: [answers]}}."""
    name = function["name"]
    if name not in call or not isinstance(call[name], dict):
        return Verdict(False, "wrong_func_name", f"function {name!r} not called")
    args = call[name]
    params = function.get("parameters", {})
    properties = params.get("properties", {})
    possible = next(iter(possible_answer.values()))
    for required in params.get("required", []):
        if required not in args:
            return Verdict(False, "missing_required", f"missing required parameter {required!r}")
    for param, value in args.items():
        if param not in properties or param not in possible:
            return Verdict(False, "unexpected_param", f"unexpected parameter {param!r}")
        verdict = check_param(param, value, properties[param], possible[param])
        if not verdict.valid:
            return verdict
    for param, answers in possible.items():
        if param not in args and "" not in answers:
            return Verdict(False, "missing_optional", f"{param!r} left out but not optional")
    return OK
