"""Quality tasks (issue 14): scorers, BFCL's AST rules, loaders, the unconstrained engine, the
paired statistics, and a short end-to-end run. Expected values are written by hand here."""
from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from harness.errors import ConfigError
from harness.scoring.bfcl_ast import check_call, normalise
from harness.scoring.quality import score
from harness.tasks.loaders import load_tasks

QUALITY_SETS = ["quality-gsm8k", "quality-last-letter", "quality-shuffle-objects", "quality-bfcl"]


# ---------- scorers (JSB's extraction: first regex match on the raw output) ----------

@pytest.mark.parametrize("text, ok", [
    ('{"reasoning": "16-3-4=9, 9*2=18", "answer": 18}', True),
    ('{"reasoning":"...","answer":18}', True),                    # compact, as a constrained engine writes
    ('{"reasoning": "...", "answer": 17}', False),                # wrong number
    ('The answer is 18.', False),                                  # no "answer": field: unparseable, wrong
    ('{"answer": 18, "answer": 3}', True),                        # the first match counts
    ('{"reasoning": "x", "answer": -18}', False),                 # the pattern takes no sign
    ('{"reasoning": "x", "answer": "18"}', False),                # a string is not matched
    ('{"reasoning": "x", "answer": 180}', False),
])
def test_gsm8k_scorer(text, ok):
    assert score("gsm8k", text, 18) is ok


def test_gsm8k_reference_drops_thousands_separators():
    from harness.tasks.quality import gsm8k_reference

    assert gsm8k_reference("...so 70,000\n#### 70,000") == 70000
    assert score("gsm8k", '{"answer": 70000}', gsm8k_reference("x\n#### 70,000")) is True


@pytest.mark.parametrize("text, ok", [
    ('{"reasoning": "...", "answer": "yajo"}', True),
    ('{"reasoning": "...", "answer": "YAJO"}', True),    # case-insensitive
    ('{"reasoning": "...", "answer": "yaj"}', False),    # three letters: no match
    ('{"reasoning": "...", "answer": "yajoo"}', False),  # five letters: no match
    ('{"reasoning": "...", "answer": "Y-A-J-O"}', False),
    ('yajo', False),
])
def test_last_letter_scorer(text, ok):
    assert score("last_letter", text, "yajo") is ok


@pytest.mark.parametrize("text, ok", [
    ('{"reasoning": "...", "answer": "C"}', True),
    ('{"reasoning": "...", "answer": "c"}', True),
    ('{"reasoning": "...", "answer": "(C)"}', False),
    ('{"reasoning": "...", "answer": "B"}', False),
    ('{"reasoning": "... choice C"', False),            # cut off before the answer
])
def test_shuffle_scorer(text, ok):
    assert score("shuffle_objects", text, "C") is ok


def test_no_output_or_no_reference_is_not_judged():
    assert score("gsm8k", None, 18) is None
    assert score("last_letter", '{"answer": "abcd"}', None) is None


# ---------- BFCL AST rules: each case fails if its rule were wrong ----------

FUNC = {"name": "geo.distance", "parameters": {"type": "dict", "required": ["city", "km"], "properties": {
    "city": {"type": "string"}, "km": {"type": "float"}, "count": {"type": "integer"},
    "exact": {"type": "boolean"}, "stops": {"type": "array", "items": {"type": "string"}},
    "ids": {"type": "array", "items": {"type": "integer"}},
    "box": {"type": "dict", "properties": {"w": {"type": "integer"}, "unit": {"type": "string"}}},
    "mode": {"type": "string"}}}}
ANSWER = {"geo.distance": {"city": ["New York, NY", "NYC"], "km": [5.0], "count": ["", 3], "exact": [True, ""],
                           "stops": [["San Francisco", "LA"], ""], "ids": [[1, 2], ""],
                           "box": [{"w": [2], "unit": ["cm", ""]}, ""], "mode": ["", "fast"]}}


def check(args, name="geo.distance"):
    return check_call(FUNC, {name: args}, ANSWER)


def test_bfcl_accepts_the_reference_call():
    assert check({"city": "NYC", "km": 5.0}).valid


@pytest.mark.parametrize("args, name, error", [
    ({"city": "NYC", "km": 5.0}, "geo_distance", "wrong_func_name"),      # name must match exactly
    ({"city": "NYC"}, "geo.distance", "missing_required"),
    ({"city": "NYC", "km": 5.0, "speed": 3}, "geo.distance", "unexpected_param"),
    ({"city": "NYC", "km": "5"}, "geo.distance", "type_error"),           # a string is not a float
    ({"city": "NYC", "km": 5.0, "count": 3.0}, "geo.distance", "type_error"),  # float for integer
    ({"city": "NYC", "km": 5.0, "count": True}, "geo.distance", "type_error"),  # bool is not an int
    ({"city": "Boston", "km": 5.0}, "geo.distance", "value_error"),
    ({"city": "NYC", "km": 6.0}, "geo.distance", "value_error"),
    ({"city": "NYC", "km": 5.0, "stops": ["LA", "San Francisco"]}, "geo.distance", "value_error"),  # order matters
    ({"city": "NYC", "km": 5.0, "box": {"w": 2, "depth": 1}}, "geo.distance", "value_error"),  # unexpected dict key
    ({"city": "NYC", "km": 5.0, "box": {"unit": "cm"}}, "geo.distance", "value_error"),  # non-optional key left out
])
def test_bfcl_rules(args, name, error):
    verdict = check(args, name)
    assert not verdict.valid and verdict.error_type == error, verdict


def test_bfcl_array_items_are_type_checked_one_level_deep():
    func = {"name": "f", "parameters": {"type": "dict", "required": ["ids"],
                                        "properties": {"ids": {"type": "array", "items": {"type": "integer"}}}}}
    verdict = check_call(func, {"f": {"ids": [1, "2"]}}, {"f": {"ids": [[1, 2]]}})
    assert not verdict.valid and verdict.error_type == "type_error"
    assert check_call(func, {"f": {"ids": [1, 2]}}, {"f": {"ids": [[1, 2]]}}).valid
    # BFCL checks items only against list-valued possible answers; with the optional marker "" among
    # them the items pass the type check and the value check rejects the call instead
    verdict = check({"city": "NYC", "km": 5.0, "ids": [1, "2"]})
    assert not verdict.valid and verdict.error_type == "value_error"


def test_bfcl_int_accepted_for_float_and_strings_normalised():
    assert check({"city": "new york ny", "km": 5}).valid                # int -> float; ", " dropped, lower case
    assert check({"city": "N.Y.C", "km": 5.0}).valid                     # "." removed
    assert check({"city": "NYC", "km": 5.0, "stops": ["san-francisco", "L A"]}).valid  # list elements normalised
    assert check({"city": "NYC", "km": 5.0, "box": {"w": 2, "unit": "CM"}}).valid     # dict values normalised
    assert check({"city": "NYC", "km": 5.0, "box": {"w": 2}}).valid                    # optional dict key
    assert normalise("April 1, 2024") == normalise("april 1 2024") == "april12024"
    assert normalise("it's") == 'it"s'


def test_bfcl_optional_parameters():
    assert check({"city": "NYC", "km": 5.0, "count": 3}).valid           # optional given with a listed value
    assert not check({"city": "NYC", "km": 5.0, "count": 4}).valid
    strict = {"geo.distance": {**ANSWER["geo.distance"], "mode": ["fast"]}}  # no "": mode must be given
    verdict = check_call(FUNC, {"geo.distance": {"city": "NYC", "km": 5.0}}, strict)
    assert not verdict.valid and verdict.error_type == "missing_optional"


def test_bfcl_variable_values_compare_exactly():
    """A possible answer whose type differs from the declared one is a variable: equality, no normalising."""
    func = {"name": "f", "parameters": {"type": "dict", "required": ["n"], "properties": {"n": {"type": "integer"}}}}
    answer = {"f": {"n": ["num_items"]}}
    assert check_call(func, {"f": {"n": "num_items"}}, answer).valid
    assert not check_call(func, {"f": {"n": "NUM items"}}, answer).valid


def test_bfcl_scorer_reads_one_json_call():
    ref = {"function": FUNC, "ground_truth": ANSWER}
    assert score("bfcl_ast", '{"name": "geo.distance", "arguments": {"city": "NYC", "km": 5}}', ref) is True
    assert score("bfcl_ast", '{"name": "geo.distance", "arguments": {"city": "NYC"}}', ref) is False
    assert score("bfcl_ast", 'geo.distance(city="NYC", km=5)', ref) is False           # not JSON
    assert score("bfcl_ast", '{"function": "geo.distance", "parameters": {}}', ref) is False


# ---------- loaders on the shipped samples ----------

@pytest.mark.parametrize("dataset", QUALITY_SETS)
def test_shipped_samples_load(dataset):
    tasks = load_tasks(dataset)
    assert len(tasks) == 20
    assert all(t.scorer and t.reference is not None and t.kind == "json_schema" for t in tasks)
    assert len({t.id for t in tasks}) == 20
    assert all(t.source == f"{dataset}:sample" for t in tasks)


def test_gsm8k_sample_references_and_prompt():
    tasks = load_tasks("quality-gsm8k")
    items = [json.loads(line) for line in open("datasets/quality/gsm8k/sample.jsonl", encoding="utf-8")]
    assert [t.reference for t in tasks] == [int(re.search(r"####\s*([\d,]+)\s*$", it["answer"])[1].replace(",", ""))
                                            for it in items]
    p = tasks[0].prompt
    assert [m["role"] for m in p] == ["system"] + ["user", "assistant"] * 3 + ["user"]
    assert p[0]["content"].startswith("You are an expert in solving grade school math tasks.")
    assert p[-1]["content"] == f"Question: {items[0]['question']}\","
    assert tasks[0].schema["properties"]["answer"] == {"title": "Answer", "type": "integer"}


def test_last_letter_references_are_the_last_letters():
    for t in load_tasks("quality-last-letter"):
        names = re.search(r'"(.*?)"', t.prompt[-1]["content"])[1].split()
        assert t.reference == "".join(n[-1] for n in names).lower()


def test_shuffle_references_are_option_letters():
    tasks = load_tasks("quality-shuffle-objects")
    assert {t.reference for t in tasks} <= set("ABCDE")
    assert "Options:\n(A)" in tasks[0].prompt[-1]["content"]
    assert tasks[0].prompt[1]["content"].startswith("Question: {'input': 'Alice, Bob, Claire, Dave, and Eve are dancers")


def test_bfcl_ground_truth_call_is_valid_and_correct():
    """Build the call from each item's first possible answers: the schema accepts it, the scorer passes it."""
    import jsonschema

    for t in load_tasks("quality-bfcl"):
        truth = t.reference["ground_truth"]
        name, params = next(iter(truth.items()))
        args = {k: next(v for v in vals if v != "") for k, vals in params.items() if any(v != "" for v in vals)}
        text = json.dumps({"name": name, "arguments": args})
        jsonschema.validate(json.loads(text), t.schema)
        assert score("bfcl_ast", text, t.reference) is True, t.id
        wrong = json.dumps({"name": name + "_x", "arguments": args})
        assert score("bfcl_ast", wrong, t.reference) is False


def test_quality_prompts_survive_the_jsb_protocol():
    from harness.protocols import get_protocol

    task = load_tasks("quality-gsm8k")[0]
    proto = get_protocol("jsonschemabench")
    assert proto.messages(task) == task.prompt and proto.shots_for(task) == 3


def test_a_prompt_file_replaces_the_shipped_prompt(tmp_path):
    """--dataset-args prompt=FILE: the messages come from the file (written here by hand), the items and
    schema stay, and the rows' source names the file and its content's hash."""
    import hashlib

    spec = {"system": "Always respond with JSON.", "shots": [{"user": "Input: 1+1", "assistant": '{"answer": 2}'}],
            "user_template": "Input: {question} {{done}}"}
    path = tmp_path / "figure7.json"
    path.write_text(json.dumps(spec), encoding="utf-8")
    shipped = load_tasks("quality-gsm8k")
    tasks = load_tasks("quality-gsm8k", dataset_args={"prompt": str(path)})
    question = json.loads(open("datasets/quality/gsm8k/sample.jsonl", encoding="utf-8").readline())["question"]
    assert tasks[0].prompt == [{"role": "system", "content": "Always respond with JSON."},
                               {"role": "user", "content": "Input: 1+1"}, {"role": "assistant", "content": '{"answer": 2}'},
                               {"role": "user", "content": f"Input: {question} {{done}}"}]
    assert [t.reference for t in tasks] == [t.reference for t in shipped] and tasks[0].schema == shipped[0].schema
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    assert tasks[0].source == f"quality-gsm8k:sample:prompt=figure7.json@{digest}"


@pytest.mark.parametrize("body, problem", [
    ("{", "cannot read the prompt"),
    ("[]", "not a JSON object"),
    ('{"system": 1, "shots": [], "user_template": "{question}"}', "system is not a string"),
    ('{"system": "s", "shots": [{"user": "u"}], "user_template": "{question}"}', "shots is not a list"),
    ('{"system": "s", "shots": [], "user_template": "Q: {q}"}', "user_template is not a string containing"),
    ('{"system": "s", "shots": [], "user_template": "{question} {x}"}', "stray brace field"),
])
def test_a_malformed_prompt_file_is_one_line_naming_it(tmp_path, capsys, body, problem):
    from harness.cli import main

    path = tmp_path / "p.json"
    path.write_text(body, encoding="utf-8")
    assert main(["run", "--dataset", "quality-last-letter", "--dataset-args", f"prompt={path}", "--engines",
                 "unconstrained", "--reports-dir", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and problem in err[0], err
    with pytest.raises(ConfigError, match="for the JSB sets"):
        load_tasks("quality-bfcl", dataset_args={"prompt": str(path)})


def test_bad_subset_and_offline_hub_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="--subset must be"):
        load_tasks("quality-gsm8k", subset="Github_easy")
    with pytest.raises(ConfigError, match="hub dataset openai/gsm8k not available"):
        load_tasks("quality-gsm8k", subset="full", hub_cache=str(tmp_path), offline=True)


def test_full_set_readers_on_hub_layouts(tmp_path):
    """The hub layouts (parquet splits, BBH's examples file, BFCL's question + possible_answer files)."""
    import pandas as pd

    from harness.tasks.quality import _bbh_rows, _bfcl_rows, _parquet_rows

    (tmp_path / "main").mkdir()
    pd.DataFrame({"question": ["q"], "answer": ["a\n#### 1,234"]}).to_parquet(tmp_path / "main" / "test-00000.parquet")
    assert _parquet_rows(tmp_path) == [{"question": "q", "answer": "a\n#### 1,234"}]
    ex = [{"input": f"i{k}", "target": "(B)"} for k in range(4)]
    (tmp_path / "tracking_shuffled_objects_five_objects.json").write_text(json.dumps({"canary": "", "examples": ex}))
    assert [r["input"] for r in _bbh_rows(tmp_path)] == ["i2", "i3"]
    (tmp_path / "possible_answer").mkdir()
    (tmp_path / "BFCL_v3_simple.json").write_text(json.dumps({"id": "simple_0", "question": [], "function": []}) + "\n")
    (tmp_path / "possible_answer" / "BFCL_v3_simple.json").write_text(
        json.dumps({"id": "simple_0", "ground_truth": [{"f": {}}]}) + "\n")
    assert _bfcl_rows(tmp_path)[0]["ground_truth"] == [{"f": {}}]


# ---------- the unconstrained engine ----------

def test_unconstrained_engine_allows_everything():
    from harness.compiling import compile_task
    from harness.engines import ENGINES
    from harness.engines.bitmask import new_bitmask, to_bool
    from harness.lm.tabular import TabularLM

    lm = TabularLM(["a", "b", "{", b""], eos_id=3)
    engine = ENGINES.create("unconstrained", lm.tokenizer)
    task = load_tasks("quality-gsm8k")[0]
    comp = compile_task(engine, task, timeout_s=5.0, guard=True)
    assert comp.status == "ok"
    m = engine.new_matcher(comp.compiled)
    mask = new_bitmask(300)
    m.fill_mask(mask)
    assert to_bool(mask, 300).all()
    assert all(m.check(t) and m.advance(t) for t in (0, 299, 3)) and m.is_accepting()


def _steered_lm(target: str):
    """A byte-level tabular LM whose greedy continuation is exactly `target`, then EOS."""
    from harness.lm.tabular import TabularLM

    vocab = [chr(c) for c in range(32, 127)] + [b""]
    eos = len(vocab) - 1
    ids = [vocab.index(ch) for ch in target] + [eos]
    table = {}
    for i, tok in enumerate(ids):
        logits = np.zeros(len(vocab))
        logits[tok] = 10.0
        table[tuple(ids[:i])] = logits
    return TabularLM(vocab, eos_id=eos, table=table, seed_key="quality")


@pytest.mark.parametrize("target, correct, valid", [
    ('{"reasoning":"9*2=18","answer":18}', True, True),
    ('{"reasoning":"9*2=17","answer":17}', False, True),
    ('So the answer is 18', False, False),
])
def test_run_rows_carry_correct_for_every_engine(tmp_path, target, correct, valid):
    """Unconstrained decoding reproduces the LM's greedy text; `correct` and `valid` are judged from it."""
    from harness.config import RunConfig
    from harness.runner import run

    cfg = RunConfig(dataset="quality-gsm8k", limit=1, engines=["unconstrained", "llguidance"], max_tokens=60,
                    reports_dir=str(tmp_path), run_id="q", progress=False, compile_guard=False)
    rows = [json.loads(line) for line in (run(cfg, lm=_steered_lm(target)) / "rows.jsonl").open()]
    free = next(r for r in rows if r["engine"] == "unconstrained")
    assert free["output_text"] == target and free["correct"] is correct and free["valid"] is valid
    constrained = next(r for r in rows if r["engine"] == "llguidance")
    assert isinstance(constrained["correct"], bool)
    if valid:  # the LM's own text is in the language, so the constraint changes nothing
        assert constrained["output_text"] == target and constrained["correct"] is correct


# ---------- statistics ----------

def _rows(engine, outcomes, dataset="quality-x:sample"):
    return [{"source": dataset, "engine": engine, "sampler": "masking", "task_id": f"t{i}", "seed": 0,
             "correct": c, "valid": c is not None, "finish_reason": "eos"} for i, c in enumerate(outcomes)]


def _wilson(k, n, z=1.959963984540054):
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def _mcnemar(b, c):
    n = b + c
    tail = sum(math.comb(n, k) for k in range(0, min(b, c) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def test_accuracy_and_paired_difference_against_hand_computation():
    from harness.analysis.quality import accuracies, differences, quality_rows

    base = [True, False, False, True, False, False, True, False, False, False, True, False]
    new = [True, True, True, True, False, True, True, False, True, None, True, True]
    rows = quality_rows(_rows("unconstrained", base) + _rows("xgrammar", new))
    rows.reverse()  # pairing is by task and seed, not by order
    accs = {a.engine: a for a in accuracies(rows)}
    assert accs["xgrammar"].correct == 9 and accs["xgrammar"].not_judged == 1 and accs["xgrammar"].n == 12
    low, high = _wilson(9, 12)
    assert accs["xgrammar"].low == pytest.approx(low) and accs["xgrammar"].high == pytest.approx(high)
    (d,) = differences(rows, seed=3)
    assert d.diff == pytest.approx((9 - 4) / 12)
    assert (d.engine_only, d.baseline_only) == (5, 0)
    assert d.mcnemar_p == pytest.approx(_mcnemar(5, 0))
    assert d.low <= d.diff <= d.high and -1 <= d.low and d.high <= 1
    assert d.low > 0  # five one-sided discordant pairs of twelve: the bootstrap interval excludes 0


def test_identical_runs_give_a_zero_difference_and_p_one():
    from harness.analysis.quality import differences

    same = [True, False, True, False]
    (d,) = differences(_rows("unconstrained", same) + _rows("llguidance", same))
    assert (d.diff, d.low, d.high, d.mcnemar_p) == (0.0, 0.0, 0.0, 1.0)


def test_quality_command_writes_tables(tmp_path):
    from harness.cli import main
    from harness.config import RunConfig
    from harness.runner import run

    cfg = RunConfig(dataset="quality-gsm8k", limit=2, engines=["unconstrained", "llguidance"], max_tokens=40,
                    reports_dir=str(tmp_path), run_id="q", progress=False, compile_guard=False)
    run_dir = run(cfg, lm=_steered_lm('{"reasoning":"x","answer":18}'))
    assert main(["quality", str(run_dir)]) == 0
    text = (run_dir / "quality.md").read_text()
    assert "| quality-gsm8k:sample | unconstrained | masking | 2 | 1 | 50.0 |" in text
    assert "| quality-gsm8k:sample | llguidance | unconstrained | masking | 2 |" in text
    assert main(["quality", str(tmp_path / "missing")]) == 2


def test_quality_tables_escape_the_dataset_source():
    """A source carries a user's prompt file name (--dataset-args prompt=...): its pipes, tags and line
    breaks stay inside one cell."""
    from harness.analysis.quality import Accuracy, markdown

    acc = Accuracy("quality-gsm8k:sample:prompt=a|b<i>\nc.json@0123", "xgrammar", "masking", 4, 1, 0.25, 0.05, 0.7, 4, 0)
    line = next(x for x in markdown([acc], []).splitlines() if "xgrammar" in x)
    assert line.startswith("| quality-gsm8k:sample:prompt=a\\|b&lt;i> c.json@0123 | xgrammar | masking | 4 | 1 | 25.0 |")
    assert line.count(" | ") == 8  # nine cells, as the header has


# ---------- the real model, briefly ----------

@pytest.mark.model
def test_real_model_quality_run(tmp_path, gemma_lm):
    from harness.config import RunConfig
    from harness.runner import run

    cfg = RunConfig(dataset="quality-shuffle-objects", limit=1, engines=["xgrammar", "unconstrained"], max_tokens=16,
                    reports_dir=str(tmp_path), run_id="real", progress=False)
    rows = [json.loads(line) for line in (run(cfg, lm=gemma_lm) / "rows.jsonl").open()]
    assert len(rows) == 2 and all(isinstance(r["correct"], bool) for r in rows)
    assert all(r["prompt_shots"] == 1 and r["compile_status"] == "ok" for r in rows)
    constrained = [r for r in rows if r["engine"] == "xgrammar"]
    assert all(r["output_text"].startswith('{"reasoning":"') for r in constrained)
