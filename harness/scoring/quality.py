"""Is the answer right? Scorers for the quality tasks, by name: scorer(output_text, reference) -> bool | None.

The three JSONSchemaBench quality tasks extract the answer as the notebooks JSB's prompts come
from do (dottxt-ai/demos, say-what-you-mean; datasets/quality/*/PROVENANCE.md): the first match
of a regular expression on the raw output, whether or not the output parses as JSON, so a
constrained and an unconstrained run are read the same way. No match is a wrong answer (False).
None means there was nothing to judge (no reference). BFCL parses the output as one JSON call
and applies BFCL's AST rules (harness.scoring.bfcl_ast).
"""
from __future__ import annotations

import json
import re
from typing import Any, Callable

from .bfcl_ast import check_call

GSM8K_ANSWER = re.compile(r'"answer":[ ]?([1-9][0-9]{0,9})')
LAST_LETTER_ANSWER = re.compile(r'"answer":[ ]?"([A-Za-z]{4})"')
SHUFFLE_ANSWER = re.compile(r'"answer":[ ]?"([A-Za-z])"')


def gsm8k(text: str, reference: Any) -> bool | None:
    """The first `"answer": N` (N a positive integer, no sign, no decimals) equals the reference."""
    if reference is None:
        return None
    match = GSM8K_ANSWER.search(text or "")
    return match is not None and int(match[1]) == int(reference)


def last_letter(text: str, reference: Any) -> bool | None:
    """The first 4-letter `"answer": "xxxx"`, lower-cased, equals the reference."""
    if reference is None:
        return None
    match = LAST_LETTER_ANSWER.search(text or "")
    return match is not None and match[1].lower() == str(reference)


def shuffle_objects(text: str, reference: Any) -> bool | None:
    """The first one-letter `"answer": "x"`, upper-cased, equals the option letter of the target."""
    if reference is None:
        return None
    match = SHUFFLE_ANSWER.search(text or "")
    return match is not None and match[1].upper() == str(reference)


def bfcl(text: str, reference: Any) -> bool | None:
    """The output is one JSON object {"name": ..., "arguments": {...}} that passes BFCL's AST check."""
    if not reference:
        return None
    try:
        call = json.loads(text or "")
    except (json.JSONDecodeError, RecursionError):
        return False
    if not isinstance(call, dict) or not isinstance(call.get("name"), str) or not isinstance(call.get("arguments"), dict):
        return False
    return check_call(reference["function"], {call["name"]: call["arguments"]}, reference["ground_truth"]).valid


SCORERS: dict[str, Callable[[str, Any], bool | None]] = {
    "gsm8k": gsm8k, "last_letter": last_letter, "shuffle_objects": shuffle_objects, "bfcl_ast": bfcl,
}


def score(scorer: str, text: str | None, reference: Any) -> bool | None:
    """The named scorer's verdict; None when there is no output to judge."""
    if text is None:
        return None
    return SCORERS[scorer](text, reference)
