"""Grammar tasks: the loader's layout and errors, and the Lark referee."""
from __future__ import annotations

import json

import pytest

from harness.errors import ConfigError
from harness.scoring.lark_check import lark_accepts
from harness.tasks.grammars import load_grammars

ARITH = 'start: expr\nexpr: term (("+"|"-") term)*\nterm: NUM | "(" expr ")"\nNUM: /0|[1-9][0-9]*/\n'


def make_suite(tmp_path, with_regex=False):
    d = tmp_path / "grammars" / "arith"
    d.mkdir(parents=True)
    (d / "grammar.lark").write_text(ARITH)
    (d / "grammar.ebnf").write_text('root ::= expr\nexpr ::= term (("+" | "-") term)*\nterm ::= num | "(" expr ")"\nnum ::= "0" | [1-9] [0-9]*\n')
    if with_regex:
        (d / "grammar.regex").write_text("[0-9]+\n")
    (d / "task.json").write_text(json.dumps({"id": "arith", "prompt": "Write a sum.", "positives": ["1+2", "(3-4)+10"],
                                             "negatives": ["1+", "01"]}))
    return tmp_path / "grammars"


def test_loader_reads_formats_examples_and_prompt(tmp_path):
    [task] = load_grammars(make_suite(tmp_path, with_regex=True))
    assert task.kind == "cfg" and task.id == "arith"
    assert set(task.grammars) == {"lark", "ebnf", "regex"} and task.grammars["regex"] == "[0-9]+"
    assert [e.valid for e in task.examples] == [True, True, False, False]
    assert task.prompt == [{"role": "user", "content": "Write a sum."}]


def test_loader_errors(tmp_path):
    suite = make_suite(tmp_path)
    (suite / "arith" / "grammar.lark").unlink()
    with pytest.raises(ConfigError, match="grammar.lark"):
        load_grammars(suite)
    with pytest.raises(ConfigError, match="not found"):
        load_grammars(tmp_path / "nowhere")


@pytest.mark.parametrize("text,ok", [("1+2", True), ("(3-4)+10", True), ("1+", False), ("01", False), ("", False)])
def test_lark_referee(text, ok):
    assert lark_accepts(ARITH, text)[0] is ok


def test_engines_take_their_format_or_say_unsupported(tmp_path, engines):
    from harness.engines.base import Unsupported

    [task] = load_grammars(make_suite(tmp_path))
    engines["xgrammar"].compile(task)  # has ebnf
    engines["llguidance"].compile(task)  # has lark
    for name in ("outlines", "llamacpp"):  # no regex, no gbnf here
        with pytest.raises(Unsupported):
            engines[name].compile(task)
