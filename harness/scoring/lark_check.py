"""The referee for grammar tasks: Lark's Earley parser on the output text."""
from __future__ import annotations

from functools import lru_cache

import lark


@lru_cache(maxsize=256)
def parser(grammar: str) -> lark.Lark:
    return lark.Lark(grammar, parser="earley", lexer="dynamic", start="start")


def lark_accepts(grammar: str, text: str) -> tuple[bool, str]:
    try:
        parser(grammar).parse(text)
    except lark.exceptions.LarkError as exc:
        return False, str(exc).splitlines()[0][:300]
    return True, ""
