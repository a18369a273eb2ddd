"""AWRS-SMC on the toy world (ALGORITHMS.md 7.4): Zhat is unbiased for P(L), at N = 1 and at N = 4
with resampling (multinomial and stratified; wrong weight resets are caught), and the weighted
posterior approaches Q as the particle count grows; AWRS runs through the real runner. Issue 11:
forks are engine time, the forced stop and all-dead runs have their own finish reasons (and the
latter no output to score), tiny allowed masses keep finite weights."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from harness.engines import ENGINES
from harness.lm.tabular import toy_binary_lm
from harness.samplers.smc import AWRSSampler, AWRSSMCSampler
from harness.tasks.task import Task

LANGUAGE = ["00000"] + ["1" + "".join(p) for p in itertools.product("01", repeat=4)]
TOY = Task(id="toy", kind="cfg", source="test", prompt=[], grammars={"lark": 'start: "00000" | "1" /[01]{4}/'})
P_L = 0.028923615


@pytest.fixture(scope="module")
def toy():
    lm = toy_binary_lm()
    return lm, ENGINES.create("llguidance", lm.tokenizer).compile(TOY)


def exact_q(lm):
    pw = {w: math.exp(sum(lm.logprobs([int(c) for c in w[:i]])[int(w[i]) if i < 5 else 2] for i in range(6)))
          for w in LANGUAGE}
    z = sum(pw.values())
    return {w: v / z for w, v in pw.items()}


def test_zhat_is_unbiased_for_p_of_l(toy):
    lm, compiled = toy
    sampler = AWRSSampler()
    z = [math.exp(sampler.generate(lm, compiled.matcher(), [], 10, seed=s).extra["log_zhat"]) for s in range(3000)]
    mean, se = float(np.mean(z)), float(np.std(z) / math.sqrt(len(z)))
    assert abs(mean - P_L) < 3.5 * se, (mean, se)


def test_posterior_tv_shrinks_with_particles(toy):
    import json

    lm, compiled = toy
    q = exact_q(lm)
    tvs = {}
    for n, runs in ((1, 150), (16, 60)):
        sampler = AWRSSMCSampler(particles=n, ess_threshold=0.5)
        avg = dict.fromkeys(LANGUAGE, 0.0)
        for s in range(runs):
            post = json.loads(sampler.generate(lm, compiled.matcher(), [], 10, seed=s).extra["posterior"])
            for w, v in post.items():
                avg[w] += v / runs
        tvs[n] = 0.5 * sum(abs(avg[w] - q[w]) for w in LANGUAGE)
    assert tvs[1] > 0.3          # N = 1 is LCD's bias (0.408 in ALGORITHMS.md 7.4)
    assert tvs[16] < 0.1         # 0.037 there with 300 runs
    assert tvs[16] < tvs[1] / 3


def test_awrs_in_the_runner_counts_evaluations(tmp_path):
    """Through `run`: rows carry constraint evaluations far below |V|+1 per token, and SMC results."""
    import json as _json

    from harness.config import RunConfig
    from harness.reporting.writer import read_rows
    from harness.runner import run
    from tests.test_runner import byte_lm, write_dataset

    cfg = RunConfig(dataset=str(write_dataset(tmp_path)), engines=["llguidance"], samplers=["masking", "awrs-smc"],
                    particles=3, max_tokens=12, reports_dir=str(tmp_path / "r"), run_id="a", progress=False,
                    compile_guard=False)
    rows = read_rows(run(cfg, lm=byte_lm()))
    smc = [r for r in rows if r["sampler"] == "awrs-smc" and r["compile_status"] == "ok" and r["forward_passes"]]
    assert smc and all("x_log_zhat" in r and "x_ess" in r for r in smc)
    vocab = len(byte_lm().tokenizer.token_bytes)
    for r in smc:
        assert r["constraint_evals"] / r["forward_passes"] < vocab
        assert _json.loads(r["sampler_settings"])["particles"] == 3


def test_evaluations_recorded_per_step(toy):
    """Per step and per sequence, as ALGORITHMS.md 3.6 counts them: one entry per LM call, summing to the
    sequence's total, and no step checks more than both passes can (|V| each)."""
    lm, compiled = toy
    for seed in range(20):
        gen = AWRSSampler().generate(lm, compiled.matcher(), [], 10, seed=seed)
        assert sum(gen.step_evals) == gen.constraint_evals
        assert len(gen.step_evals) == gen.forward_passes
        assert all(1 <= e <= 2 * lm.tokenizer.vocab_size for e in gen.step_evals)


def zhat_mean_and_se(lm, compiled, sampler, runs):
    z = []
    resamplings = 0
    for s in range(runs):
        gen = sampler.generate(lm, compiled.matcher(), [], 10, seed=s)
        z.append(math.exp(gen.extra["log_zhat"]))
        resamplings += gen.extra["resamplings"]
    return float(np.mean(z)), float(np.std(z) / math.sqrt(runs)), resamplings / runs


@pytest.mark.parametrize("scheme", ["multinomial", "stratified"])
def test_zhat_is_unbiased_with_resampling(toy, scheme):
    """N = 4 with an ESS threshold of 1 (resample whenever the weights differ): weights reset to
    the mean at each resampling keep E[Zhat] = P(L) (ALGORITHMS.md 7.4)."""
    lm, compiled = toy
    sampler = AWRSSMCSampler(particles=4, ess_threshold=1.0, resampling=scheme)
    mean, se, resamplings = zhat_mean_and_se(lm, compiled, sampler, 1000)
    assert resamplings >= 2, resamplings
    assert abs(mean - P_L) < 3.5 * se, (mean, se)


def _mean_of_drawn(log_w, idx):
    from harness.samplers.smc import log_mean_exp

    return np.full(len(idx), log_mean_exp(log_w[idx]))


# Wrong resets after resampling; each puts Zhat 12 to 30 s.e. above P(L) in 300 runs.
WRONG_RESETS = {
    "old weights kept": lambda log_w, idx: log_w[idx],
    "weights reset to 1": lambda log_w, idx: np.zeros(len(idx)),
    "mean of the drawn ancestors": _mean_of_drawn,
}


@pytest.mark.parametrize("scheme", ["multinomial", "stratified"])
@pytest.mark.parametrize("wrong", sorted(WRONG_RESETS))
def test_broken_weight_reset_is_caught(toy, monkeypatch, wrong, scheme):
    """The same check on a sampler whose reset after resampling is wrong fails: Zhat is off by > 6 s.e.
    (300 runs are enough for these; the check above uses 1000)."""
    import harness.samplers.smc as smc

    monkeypatch.setattr(smc, "reset_weights", WRONG_RESETS[wrong])
    lm, compiled = toy
    sampler = AWRSSMCSampler(particles=4, ess_threshold=1.0, resampling=scheme)
    mean, se, _ = zhat_mean_and_se(lm, compiled, sampler, 300)
    assert abs(mean - P_L) > 6 * se, (mean, se)


class SlowFork:
    """A matcher whose fork costs `delay` seconds (as outlines' fork replays the history)."""

    def __init__(self, inner, delay, counter):
        self.inner, self.delay, self.counter = inner, delay, counter

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def fork(self):
        import time

        time.sleep(self.delay)
        self.counter[0] += 1
        return SlowFork(self.inner.fork(), self.delay, self.counter)


def test_fork_time_is_engine_time(toy):
    """Forks at the start and at every resampling are engine work, not sampler time."""
    lm, compiled = toy
    forks = [0]
    delay = 0.02
    gen = AWRSSMCSampler(particles=4, ess_threshold=1.0).generate(lm, SlowFork(compiled.matcher(), delay, forks),
                                                                   [], 10, seed=0)
    slept = forks[0] * delay
    assert forks[0] >= 3 and gen.extra["resamplings"] >= 1
    assert gen.fork_s >= slept
    assert gen.engine_s >= gen.fork_s
    assert gen.sampler_s < 0.5 * slept, (gen.sampler_s, slept)


@pytest.mark.parametrize("particles", [1, 4])
def test_forced_stop_has_its_own_finish_reason(toy, particles):
    """Every toy string has 5 digits: with max_tokens = 5 each sample ends by the forced stop at the
    bound (weight p(EOS|u) member(u)), with max_tokens = 10 by EOS."""
    lm, compiled = toy
    sampler = AWRSSMCSampler(particles=particles, ess_threshold=0.5)
    for seed in range(5):
        forced = sampler.generate(lm, compiled.matcher(), [], 5, seed=seed)
        assert forced.finish_reason == "forced_stop" and len(forced.tokens) == 5
        assert math.isfinite(forced.extra["log_zhat"])
        free = sampler.generate(lm, compiled.matcher(), [], 10, seed=seed)
        assert free.finish_reason == "eos" and len(free.tokens) == 5


class RefusesEOS:
    """An engine bug: EOS is never allowed, so every particle dies on a complete member."""

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def check(self, t):
        return t != 2 and self.inner.check(t)

    def fork(self):
        return RefusesEOS(self.inner.fork())


@pytest.mark.parametrize("case", ["bound below every string", "engine refuses EOS"])
def test_all_dead_particles_are_a_dead_end_with_no_output(toy, case):
    """When every weight is 0 there is no sample: finish dead_end and no text, so the row cannot be
    scored valid (the longest dead prefix was returned and scored: a complete member when the engine
    wrongly refuses EOS); the dead text is kept for diagnosis only."""
    from harness.runner import score_row

    lm, compiled = toy
    for seed in range(4):
        matcher = compiled.matcher() if case.startswith("bound") else RefusesEOS(compiled.matcher())
        gen = AWRSSMCSampler(particles=3).generate(lm, matcher, [], 3 if case.startswith("bound") else 10, seed=seed)
        assert gen.extra["log_zhat"] == -math.inf and gen.no_output
        assert gen.finish_reason == "dead_end"
        text = lm.tokenizer.decode(gen.tokens).decode()
        assert text == "" and not score_row(TOY, text)["valid"]
        assert len(gen.extra["dead_end_text"]) == (3 if case.startswith("bound") else 5)


class OneWayLM:
    """A 262,144-token LM: at the root one token holds all but 1e-9 of the mass and the only allowed
    token (`ok`) holds 1e-9; after it one token holds all but 1e-18 and EOS holds 1e-18."""

    vocab, big, ok, eos = 262144, 7, 200000, 1

    def __init__(self):
        from harness.lm.base import TokenizerView

        self.tokenizer = TokenizerView(token_bytes=tuple(b"" if i == self.eos else b"a" for i in range(self.vocab)),
                                       eos_id=self.eos)
        self.name = "one-way"

    def logits(self, prefix):
        x = np.full(self.vocab, -np.inf, dtype=np.float32)
        x[self.big] = 0.0
        x[self.ok if not prefix else self.eos] = math.log(1e-9 if not prefix else 1e-18)
        return x


class OneWayMatcher:
    def __init__(self, n=0):
        self.n = n

    def check(self, t):
        return t == (OneWayLM.ok if self.n == 0 else OneWayLM.eos)

    def advance(self, t):
        ok = self.check(t)
        self.n += ok
        return ok

    def fork(self):
        return OneWayMatcher(self.n)


@pytest.mark.parametrize("variant", ["paper", "recursive"])
def test_tiny_masses_keep_finite_weights_in_smc(variant):
    """Issue 11: the AWRS step at allowed mass 1e-9 on a full-size vocabulary (was -inf for the paper
    estimator, so every particle died), then the forced stop at the bound with EOS mass 1e-18."""
    lm = OneWayLM()
    for seed in range(3):
        gen = AWRSSMCSampler(particles=2, variant=variant).generate(lm, OneWayMatcher(), [], 1, seed=seed)
        assert gen.tokens == [OneWayLM.ok] and gen.finish_reason == "forced_stop", (gen.tokens, gen.finish_reason)
        expected = math.log(1e-9) + math.log(1e-18)
        assert abs(gen.extra["log_zhat"] - expected) < 1.0, gen.extra["log_zhat"]
