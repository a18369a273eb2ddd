"""Token masking on the toy world of ALGORITHMS.md 7: its samples follow the exact locally
constrained distribution (LCD), not the global target Q, and greedy follows the masked argmax."""
from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest

from harness.engines import ENGINES
from harness.lm.tabular import toy_binary_lm
from harness.samplers.masking import MaskingSampler
from harness.tasks.task import Task

LANGUAGE = ["00000"] + ["1" + "".join(p) for p in itertools.product("01", repeat=4)]
TOY = Task(id="toy-binary", kind="cfg", source="test", prompt=[],
           grammars={"ebnf": 'root ::= "00000" | "1" [01] [01] [01] [01]',
                     "lark": 'start: "00000" | "1" /[01]{4}/',
                     "regex": "00000|1[01]{4}"})


def exact_lcd(lm) -> dict[str, float]:
    """Enumerate q_LCD(w) = prod of locally renormalised allowed probabilities."""
    prefixes = {w[:i] for w in LANGUAGE for i in range(6)}
    out = {}
    for w in LANGUAGE:
        q = 1.0
        for i in range(6):
            u = w[:i]
            p = np.exp(lm.logprobs([int(c) for c in u]))
            allowed = [t for t in (0, 1) if u + str(t) in prefixes] + ([2] if u in LANGUAGE else [])
            nxt = int(w[i]) if i < 5 else 2
            q *= p[nxt] / p[allowed].sum()
        out[w] = q
    return out


@pytest.mark.parametrize("engine", ["xgrammar", "llguidance", "outlines"])
def test_masking_samples_follow_exact_lcd(engine):
    lm = toy_binary_lm()
    compiled = ENGINES.create(engine, lm.tokenizer).compile(TOY)
    sampler = MaskingSampler(temperature=1.0)
    n = 2000
    counts = Counter()
    for seed in range(n):
        gen = sampler.generate(lm, compiled.matcher(), [], max_tokens=10, seed=seed)
        assert gen.finish_reason == "eos"
        assert gen.constraint_evals == 3 * 6  # |V| (EOS included) per step, 6 steps
        counts["".join(str(t) for t in gen.tokens)] += 1
    assert set(counts) <= set(LANGUAGE)
    lcd = exact_lcd(lm)
    assert abs(sum(lcd.values()) - 1) < 1e-9
    tv = 0.5 * sum(abs(counts[w] / n - lcd[w]) for w in LANGUAGE)
    assert tv < 0.05, f"TV to exact LCD {tv:.3f}"
    # and not the global target Q (TV(LCD, Q) = 0.371 in ALGORITHMS.md 7.3)
    pw = {w: np.exp(sum(lm.logprobs([int(c) for c in w[:i]])[int(w[i]) if i < 5 else 2] for i in range(6)))
          for w in LANGUAGE}
    z = sum(pw.values())
    tv_q = 0.5 * sum(abs(counts[w] / n - pw[w] / z) for w in LANGUAGE)
    assert tv_q > 0.3


def test_same_seed_same_output_and_greedy_is_masked_argmax():
    lm = toy_binary_lm()
    compiled = ENGINES.create("llguidance", lm.tokenizer).compile(TOY)
    s = MaskingSampler(temperature=1.0)
    a = [s.generate(lm, compiled.matcher(), [], 10, seed=7).tokens for _ in range(3)]
    assert a[0] == a[1] == a[2]
    g = MaskingSampler(temperature=0.0).generate(lm, compiled.matcher(), [], 10, seed=0)
    prefix: list[int] = []
    for t in g.tokens:  # each greedy step is the best allowed token
        lp = lm.logprobs(prefix)
        u = "".join(map(str, prefix))
        allowed = [x for x in (0, 1) if any(w.startswith(u + str(x)) for w in LANGUAGE)]
        assert t == max(allowed, key=lambda x: lp[x])
        prefix.append(t)


def test_dead_end_and_max_tokens():
    lm = toy_binary_lm()
    sampler = MaskingSampler()
    # "0" then "2": no token spells "2", so after "0" nothing is allowed
    stuck = Task(id="stuck", kind="cfg", source="test", prompt=[], grammars={"ebnf": 'root ::= "0" "2"'})
    compiled = ENGINES.create("xgrammar", lm.tokenizer).compile(stuck)
    gen = sampler.generate(lm, compiled.matcher(), [], 10, seed=0)
    assert gen.finish_reason == "dead_end" and gen.tokens == [0]
    compiled = ENGINES.create("llguidance", lm.tokenizer).compile(TOY)
    gen = sampler.generate(lm, compiled.matcher(), [], 3, seed=0)
    assert gen.finish_reason == "max_tokens" and len(gen.tokens) == 3
