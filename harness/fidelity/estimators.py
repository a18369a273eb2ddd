"""Fidelity estimators: how each sampler's distribution over the target's strings is estimated.

One function per sampler name, in a registry: it draws the samples for one task and returns the
row's fields (samples, TV, KL, outside-L mass, null band, and what is particular to the sampler).
Adding a sampler to `cdbench fidelity` is one decorated function here.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..engines.base import LengthBound
from ..samplers.asap import ASApSampler, GCDSampler
from ..samplers.masking import MaskingSampler
from ..samplers.smc import AWRSSMCSampler
from .exact import ExactTarget, trie_log_q
from .metrics import empirical


@dataclass
class Draw:
    """What an estimator needs for one task: the model, the compiled constraint, the exact target."""
    task_id: str
    cfg: Any                     # FidelityConfig: samples, seed, particles, ess_threshold
    lm: Any
    engine: Any
    compiled: Any
    bound: int
    prompt: list[int]
    target: ExactTarget
    index: dict
    scorer: Any                  # run._Scorer: score(dist, outside, n), score_exact(dist)
    curve: list[dict[str, Any]] = field(default_factory=list)
    lm_s: float = 0.0

    def matcher(self) -> LengthBound:
        return LengthBound(self.engine.new_matcher(self.compiled), self.bound, self.lm.tokenizer.stops)

    def generate(self, sampler: Any, max_tokens: int, seed: int) -> Any:
        g = sampler.generate(self.lm, self.matcher(), self.prompt, max_tokens, seed)
        self.lm_s += g.lm_s
        return g


def curve_points(n: int) -> list[int]:
    pts = sorted({p for base in (1, 2, 5) for e in range(7) for p in [base * 10 ** e] if p <= n} | {n})
    return pts


ESTIMATORS: dict[str, Callable[[Draw], dict[str, Any]]] = {}


def estimator(name: str) -> Callable[[Callable[[Draw], dict[str, Any]]], Callable[[Draw], dict[str, Any]]]:
    def register(fn: Callable[[Draw], dict[str, Any]]) -> Callable[[Draw], dict[str, Any]]:
        ESTIMATORS[name] = fn
        return fn
    return register


def _independent(d: Draw, sampler: Any) -> dict[str, Any]:
    """n independent samples; an output that did not end in EOS is outside L."""
    n = d.cfg.samples
    # masking stops at max_tokens before drawing; one more step lets it draw the stop that the
    # length bound leaves as the only choice after T tokens
    outs = [_finished(d.generate(sampler, d.bound + 1, d.cfg.seed + s)) for s in range(n)]
    dist, outside = empirical(outs, d.index, len(d.target.sequences))
    return {"samples": n, **d.scorer.score(dist, outside, n)}


def _finished(g: Any) -> tuple[int, ...] | None:
    return tuple(g.tokens) if g.finish_reason == "eos" else None


@estimator("masking")
def masking(d: Draw) -> dict[str, Any]:
    """Locally constrained decoding at temperature 1 (biased: the exact LCD row shows by how much)."""
    return _independent(d, MaskingSampler(temperature=1.0))


@estimator("gcd")
def gcd(d: Draw) -> dict[str, Any]:
    """Grammar-constrained decoding with a fresh trie per sample."""
    return _independent(d, GCDSampler())


@estimator("awrs-smc")
def awrs_smc(d: Draw) -> dict[str, Any]:
    """SMC runs of `particles` particles; every final particle counts with its importance weight."""
    runs = max(1, d.cfg.samples // d.cfg.particles)
    sampler = AWRSSMCSampler(particles=d.cfg.particles, ess_threshold=d.cfg.ess_threshold)
    seqs, log_ws, zhats = [], [], []
    evals = steps = 0
    for r in range(runs):
        g = d.generate(sampler, d.bound, d.cfg.seed + r)
        evals += g.constraint_evals
        steps += g.forward_passes
        zhats.append(math.exp(g.extra["log_zhat"]))
        for toks, lw in g.particles:
            seqs.append(tuple(toks))
            log_ws.append(lw)
    lw = np.array(log_ws)
    m = np.max(lw) if np.isfinite(lw).any() else 0.0
    weights = np.where(np.isfinite(lw), np.exp(lw - m), 0.0)
    dist, outside = empirical(seqs, d.index, len(d.target.sequences), list(weights))
    z = np.array(zhats)
    return {"samples": runs * d.cfg.particles, "runs": runs, "particles": d.cfg.particles,
            **d.scorer.score(dist, outside, runs * d.cfg.particles),
            "zhat_mean": float(z.mean()), "zhat_se": float(z.std(ddof=1) / math.sqrt(runs)) if runs > 1 else None,
            "zhat_over_p_of_l": float(z.mean() / math.exp(d.target.log_pl)), "evals_per_step": evals / max(steps, 1)}


@estimator("asap")
def asap(d: Draw) -> dict[str, Any]:
    """ASAp with one trie for the task; the trie-implied distribution is scored at curve points."""
    n, t0 = d.cfg.samples, time.perf_counter()
    sampler = ASApSampler()
    outs: list[tuple[int, ...] | None] = []
    checkpoints = set(curve_points(n))
    for s in range(n):
        outs.append(_finished(d.generate(sampler, d.bound, d.cfg.seed + s)))
        if s + 1 in checkpoints:
            implied = np.exp(trie_log_q(sampler.trie, d.target))
            d.curve.append({"task": d.task_id, "samples": s + 1, "trie_tv": d.scorer.score_exact(implied)["tv"],
                            "theta_root": math.exp(sampler.trie.root.log_theta),
                            "distinct": len({o for o in outs if o is not None}),
                            "trie_nodes": sampler.trie.nodes, "seconds": time.perf_counter() - t0})
    dist, outside = empirical(outs, d.index, len(d.target.sequences))
    last = d.curve[-1]
    return {"samples": n, **d.scorer.score(dist, outside, n), "trie_tv": last["trie_tv"],
            "theta_root": last["theta_root"], "trie_nodes": sampler.trie.nodes}
