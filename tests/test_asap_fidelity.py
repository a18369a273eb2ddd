"""ASAp, GCD and the exact DFS target on the toy world (ALGORITHMS.md 7.3 and 7.5).

Exact numbers: token masking sits at TV 0.371 from Q (KL 1.431 nats); ASAp's trie-implied
distribution is exactly Q once every string has been sampled, with theta(root) = P(L); the
three known wrong variants stay far from Q (0.339, 0.371, 0.371).
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from harness.engines import ENGINES
from harness.engines.base import LengthBound
from harness.fidelity.exact import BudgetExceeded, exact_walk, trie_log_q
from harness.fidelity.metrics import empirical, kl, marginalise, null_band, tv
from harness.lm.tabular import TabularLM, toy_binary_lm
from harness.samplers.asap import ASApSampler, GCDSampler
from harness.tasks.task import Task

LANGUAGE = ["00000"] + ["1" + "".join(p) for p in itertools.product("01", repeat=4)]
TOY = Task(id="toy", kind="cfg", source="test", prompt=[],
           grammars={"lark": 'start: "00000" | "1" /[01]{4}/', "ebnf": 'root ::= "00000" | "1" [01] [01] [01] [01]',
                     "regex": "00000|1[01]{4}"})
P_L = 0.028923615


@pytest.fixture(scope="module")
def toy():
    lm = toy_binary_lm()
    engine = ENGINES.create("xgrammar", lm.tokenizer)
    compiled = engine.compile(TOY)
    target = exact_walk(lm, engine.new_matcher(compiled), [], 10)
    return lm, engine, compiled, target


def brute_force_q(lm) -> dict[str, float]:
    pw = {w: math.exp(sum(lm.logprobs([int(c) for c in w[:i]])[int(w[i]) if i < 5 else 2] for i in range(6)))
          for w in LANGUAGE}
    z = sum(pw.values())
    return {w: v / z for w, v in pw.items()}


@pytest.mark.parametrize("engine_name", ["xgrammar", "llguidance", "outlines"])
def test_exact_walk_matches_enumeration(engine_name):
    lm = toy_binary_lm()
    engine = ENGINES.create(engine_name, lm.tokenizer)
    target = exact_walk(lm, engine.new_matcher(engine.compile(TOY)), [], 10)
    strings = ["".join(map(str, s)) for s in target.sequences]
    assert sorted(strings) == sorted(LANGUAGE)
    assert math.exp(target.log_pl) == pytest.approx(P_L, abs=1e-9)
    q = brute_force_q(lm)
    assert np.allclose(target.q, [q[s] for s in strings], atol=1e-12)
    assert target.prefixes == 1 + 2 + 3 + 4 + 8 + 16 + 3  # every viable prefix once: 37
    assert target.efg([]) == pytest.approx(P_L, abs=1e-9)
    assert target.efg([0, 0, 0, 0, 0]) == pytest.approx(math.exp(lm.logprobs([0] * 5)[2]))


def test_masking_is_biased_exactly(toy):
    """ALGORITHMS.md 7.3: exact LCD vs Q: TV 0.371, KL(LCD || Q) = 1.431 nats."""
    _, _, _, target = toy
    assert target.lcd.sum() == pytest.approx(1.0)
    assert tv(target.lcd, target.q) == pytest.approx(0.371, abs=5e-4)
    assert kl(target.lcd, target.q) == pytest.approx(1.431, abs=5e-4)


def test_uniform_lm_lcd_numbers():
    """7.3, uniform LM: P_LCD(00000) = 0.5 vs Q = 1/17; TV 0.441, KL 0.754."""
    lm = TabularLM(["0", "1", b""], eos_id=2, table={k: [0.0, 0.0, 0.0] for k in
                                                     [tuple(int(c) for c in w[:i]) for w in LANGUAGE for i in range(6)]})
    engine = ENGINES.create("xgrammar", lm.tokenizer)
    target = exact_walk(lm, engine.new_matcher(engine.compile(TOY)), [], 10)
    assert target.q == pytest.approx(np.full(17, 1 / 17))
    i = target.sequences.index((0, 0, 0, 0, 0))
    assert target.lcd[i] == pytest.approx(0.5)
    assert tv(target.lcd, target.q) == pytest.approx(0.441, abs=5e-4)
    assert kl(target.lcd, target.q) == pytest.approx(0.754, abs=5e-4)


FIRST_SAMPLES = 2000
DELTA = 1e-6  # allowed chance that an exact LCD sampler fails the TV bound below


def tv_bound(n: int, k: int, delta: float = DELTA) -> float:
    """TV(empirical, p) for n draws over k outcomes stays below this with probability 1 - delta
    (Bretagnolle-Huber-Carol: P(||p_hat - p||_1 >= e) <= 2^k exp(-n e^2 / 2); TV = ||.||_1 / 2)."""
    return 0.5 * math.sqrt(2.0 * (k * math.log(2.0) + math.log(1.0 / delta)) / n)


def assert_samples_are_lcd(samples: list[tuple[int, ...] | None], target) -> None:
    """The samples' distribution is exact LCD (TV bound and a chi-square test), and visibly not Q."""
    dist, outside = empirical(samples, target.index(), len(target.sequences))
    assert outside == 0.0, "every sample ends in L"
    bound = tv_bound(len(samples), len(target.sequences))
    assert tv(dist, target.lcd) < bound, (tv(dist, target.lcd), bound)
    assert tv(dist, target.q) > 0.371 - bound  # LCD sits at TV 0.371 from Q (7.3)
    counts = np.round(dist * len(samples))
    expected = target.lcd / target.lcd.sum() * len(samples)
    big = expected >= 5  # pool the cells too small for the chi-square approximation
    obs = np.append(counts[big], counts[~big].sum())
    exp = np.append(expected[big], expected[~big].sum())
    assert stats.chisquare(obs, exp).pvalue > 1e-4


def test_fresh_trie_first_sample_is_lcd(toy):
    """7.5(a): with a fresh trie ASAp's first sample follows exact LCD. Each draw comes from a new
    sampler (a new trie), so this runs the sampler itself, not the walk's table."""
    lm, engine, compiled, target = toy
    samples = []
    for seed in range(FIRST_SAMPLES):
        gen = ASApSampler().generate(lm, engine.new_matcher(compiled), [], 10, seed=seed)
        samples.append(tuple(gen.tokens) if gen.finish_reason == "eos" else None)
    assert_samples_are_lcd(samples, target)


def test_first_sample_lowers_theta_root(toy):
    """After one sample theta(root) has dropped below 1 but not below P(L) (0.49089 in the
    reference run depends on the seed, so only bounds)."""
    lm, engine, compiled, target = toy
    sampler = ASApSampler()
    sampler.generate(lm, engine.new_matcher(compiled), [], 10, seed=0)
    assert target.log_pl < sampler.trie.root.log_theta < 0.0


def test_asap_converges_to_q_and_theta_root_is_p_of_l(toy):
    """7.5(b) end state, and (c) invariants EFG <= theta <= 1 with theta never increasing, at every node."""
    lm, engine, compiled, target = toy
    sampler = ASApSampler()
    seen: set[tuple[int, ...]] = set()
    last: dict[tuple[int, ...], float] = {}
    for i in range(3000):
        gen = sampler.generate(lm, engine.new_matcher(compiled), [], 10, seed=i)
        assert gen.finish_reason == "eos"
        seen.add(tuple(gen.tokens))
        stack = [((), sampler.trie.root)]
        while stack:
            prefix, node = stack.pop()
            theta = node.log_theta
            assert math.log(max(target.efg(prefix), 1e-300)) <= theta + 1e-12 and theta <= 0.0
            assert theta <= last.get(prefix, 0.0) + 1e-12, f"theta rose at {prefix}"
            last[prefix] = theta
            stack.extend((prefix + (t,), child) for t, (_, child) in node.children.items())
        if len(seen) == 17:
            break
    assert len(seen) == 17, "all 17 strings are seen well within 3,000 samples"
    assert tv(np.exp(trie_log_q(sampler.trie, target)), target.q) < 1e-9
    assert math.exp(sampler.trie.root.log_theta) == pytest.approx(math.exp(target.log_pl), rel=1e-9)
    assert math.exp(target.log_pl) == pytest.approx(P_L, abs=1e-9)
    # the trie knows the exact EFG of every explored prefix
    for prefix in [(), (1,), (1, 0), (0, 0, 0)]:
        assert math.exp(sampler.trie.log_theta(prefix)) == pytest.approx(target.efg(prefix), rel=1e-9)


@pytest.mark.parametrize("flaw,expected", [("last-only", 0.339), ("allowed-normalised", 0.371),
                                           ("disallowed-children", 0.371)])
def test_wrong_asap_variants_stay_far_from_q(toy, flaw, expected):
    """7.5(d): the wrong variants never reach Q (their TV after 3,000 samples stays near the reference)."""
    lm, engine, compiled, target = toy
    sampler = ASApSampler(flaw=flaw)
    for i in range(3000):
        sampler.generate(lm, engine.new_matcher(compiled), [], 10, seed=i)
    got = tv(np.exp(trie_log_q(sampler.trie, target)), target.q)
    assert got == pytest.approx(expected, abs=0.01)
    assert got > 0.3


def test_gcd_trie_is_fresh_for_every_sample(toy):
    """The GCD baseline: a new trie per sample (the reference's shared-default-trie pitfall)."""
    lm, engine, compiled, target = toy
    sampler = GCDSampler()
    tries = []
    for seed in range(20):
        gen = sampler.generate(lm, engine.new_matcher(compiled), [], 10, seed=seed)
        assert gen.extra["trie_samples"] == 1 and gen.extra["trie_expanded"] == 6  # one path, nothing reused
        assert gen.constraint_evals == 6 * 3  # |V| at each of the 6 newly expanded nodes
        tries.append(sampler.trie)
    assert len({id(t) for t in tries}) == 20


def test_gcd_samples_are_lcd(toy):
    """GCD's samples, all drawn by one sampler instance, stay exact LCD however many came before
    (a trie shared across its samples would turn it into ASAp and drift toward Q)."""
    lm, engine, compiled, target = toy
    sampler = GCDSampler()
    gens = [sampler.generate(lm, engine.new_matcher(compiled), [], 10, seed=s) for s in range(FIRST_SAMPLES)]
    assert_samples_are_lcd([tuple(g.tokens) if g.finish_reason == "eos" else None for g in gens], target)


def test_asap_reuses_the_trie(toy):
    lm, engine, compiled, _ = toy
    sampler = ASApSampler()
    first = sampler.generate(lm, engine.new_matcher(compiled), [], 10, seed=0)
    again = [sampler.generate(lm, engine.new_matcher(compiled), [], 10, seed=s) for s in range(1, 50)]
    assert first.constraint_evals == 18
    assert sum(g.constraint_evals for g in again) < 49 * 18  # revisited nodes cost no LM call and no mask
    assert sampler.trie.samples == 50


def test_length_bound_is_part_of_the_target():
    """7.7: with T below the longest string, targets are P(w | w in L, |w| <= T) and ASAp never truncates."""
    lm = toy_binary_lm()
    engine = ENGINES.create("xgrammar", lm.tokenizer)
    compiled = engine.compile(Task(id="b", kind="cfg", source="test", prompt=[], grammars={"ebnf": 'root ::= "1"+'}))
    target = exact_walk(lm, engine.new_matcher(compiled), [], 3)
    assert sorted(target.sequences) == [(1,), (1, 1), (1, 1, 1)]
    sampler = ASApSampler()
    for s in range(200):
        gen = sampler.generate(lm, LengthBound(engine.new_matcher(compiled), 3, lm.tokenizer.stops), [], 3, seed=s)
        assert gen.finish_reason == "eos" and 1 <= len(gen.tokens) <= 3
    assert tv(np.exp(trie_log_q(sampler.trie, target)), target.q) < 1e-9


def test_budget_stops_a_large_language():
    lm = toy_binary_lm()
    engine = ENGINES.create("xgrammar", lm.tokenizer)
    compiled = engine.compile(Task(id="b", kind="cfg", source="test", prompt=[], grammars={"ebnf": 'root ::= [01]+'}))
    with pytest.raises(BudgetExceeded, match="too large"):
        exact_walk(lm, engine.new_matcher(compiled), [], 30, max_prefixes=100)


def test_null_band_and_metrics(toy):
    mean, p95 = null_band(toy[3].q, 500, reps=200, seed=0)
    assert 0.04 < mean < 0.062 and 0.06 < p95 < 0.09  # 7.6: mean 0.051, p95 0.075
    dist, outside = empirical([(0,), (0,), None, (1,)], {(0,): 0, (1,): 1}, 2)
    assert dist.tolist() == [0.5, 0.25] and outside == 0.25
    assert kl(dist, np.array([0.5, 0.5]), outside) == math.inf
    assert tv(dist, np.array([0.5, 0.5]), outside) == pytest.approx(0.25)
    values, keys = marginalise(np.array([0.2, 0.3, 0.5]), ["a", "b", "a"])
    assert keys == ["a", "b"] and values.tolist() == [0.7, 0.3]


def test_fidelity_run_on_the_toy_world(tmp_path):
    """`cdbench fidelity` end to end with the toy LM on grammars/binary_skewed (the same language)."""
    import json as _json

    from harness.fidelity.run import FidelityConfig, run_fidelity

    cfg = FidelityConfig(tasks=["binary_skewed"], samples=1000, samplers=["masking", "awrs-smc", "asap"],
                         reports_dir=str(tmp_path), run_id="toy")
    run_dir = run_fidelity(cfg, lm=toy_binary_lm(), log=lambda _: None)
    result = _json.loads((run_dir / "fidelity.json").read_text())["results"][0]
    assert result["status"] == "ok" and result["sequences"] == 17 and result["walk_prefixes"] == 37
    assert result["p_of_l"] == pytest.approx(P_L, abs=1e-9)
    rows = {r["sampler"]: r for r in result["samplers"]}
    assert rows["masking (exact LCD)"]["tv"] == pytest.approx(0.371, abs=5e-4)
    masking, smc, asap = rows["masking"], rows["awrs-smc"], rows["asap"]
    assert abs(masking["tv"] - 0.371) < 0.06 and masking["tv"] > masking["null_tv_p95"]  # biased, and visibly so
    assert smc["tv"] < 0.15 and smc["outside_L"] == 0.0
    assert abs(smc["zhat_mean"] - P_L) < 4 * smc["zhat_se"]
    assert asap["trie_tv"] < 0.02 and asap["theta_root"] == pytest.approx(P_L, rel=0.05)
    curve = result["curve"]
    assert [p["samples"] for p in curve][:4] == [1, 2, 5, 10] and curve[-1]["samples"] == 1000
    assert curve[0]["trie_tv"] > 0.3 > curve[-1]["trie_tv"]
    assert (run_dir / "fidelity.md").read_text().count("| asap |") == 1
    assert (run_dir / "curve.csv").read_text().splitlines()[0].startswith("task,samples,trie_tv")


def test_trie_memory_budget_ends_the_sample_not_the_run(toy):
    lm, engine, compiled, _ = toy
    sampler = ASApSampler(trie_budget_mb=1e-4)  # ~100 bytes: the second expansion is refused
    gen = sampler.generate(lm, engine.new_matcher(compiled), [], 10, seed=0)
    assert gen.finish_reason == "error" and "budget" in gen.error


def test_kl_uses_log_q_where_q_underflows():
    q = np.array([1.0, 0.0])           # the second string's Q underflowed to 0 ...
    log_q = np.array([0.0, -800.0])    # ... but it is in L
    q_hat = np.array([0.5, 0.5])
    assert kl(q_hat, q) == math.inf
    assert kl(q_hat, q, log_q=log_q) == pytest.approx(0.5 * math.log(0.5) + 0.5 * (math.log(0.5) + 800.0))


def test_a_new_fidelity_estimator_is_one_registered_function(tmp_path, monkeypatch):
    """An estimator drawing from the exact target itself lands inside the null band; registering it
    is all it takes for `cdbench fidelity --samplers exact-draw`."""
    import json as _json

    import numpy as np

    from harness.fidelity import estimators as est
    from harness.fidelity.metrics import empirical
    from harness.fidelity.run import FidelityConfig, run_fidelity

    def exact_draw(d):
        rng = np.random.default_rng(d.cfg.seed)
        picks = rng.choice(len(d.target.sequences), size=d.cfg.samples, p=d.target.q / d.target.q.sum())
        dist, outside = empirical([tuple(d.target.sequences[i]) for i in picks], d.index, len(d.target.sequences))
        return {"samples": d.cfg.samples, **d.scorer.score(dist, outside, d.cfg.samples)}

    monkeypatch.setitem(est.ESTIMATORS, "exact-draw", exact_draw)
    cfg = FidelityConfig(tasks=["binary_skewed"], samples=400, samplers=["exact-draw"], reports_dir=str(tmp_path),
                         run_id="reg")
    run_dir = run_fidelity(cfg, lm=toy_binary_lm(), log=lambda _: None)
    row = {r["sampler"]: r for r in _json.loads((run_dir / "fidelity.json").read_text())["results"][0]["samplers"]}
    assert row["exact-draw"]["inside_band"] is True and row["exact-draw"]["tv"] <= row["exact-draw"]["null_tv_p95"]
