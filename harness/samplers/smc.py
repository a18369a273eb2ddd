"""AWRS as a sampler: one sequence (`awrs`) or N particles with resampling (`awrs-smc`).

Each particle extends by AWRS steps (ALGORITHMS.md 3.5): its log-weight accumulates the
steps' log-weights, an unbiased estimate of the product of local allowed masses W(w). When
the effective sample size falls below `ess_threshold * N` the particles are resampled
(multinomial or stratified, recorded) and every weight is reset to the mean. At max_tokens
EOS is forced with its weight correction p(stop|u) * member(u) (mass of every stop token), so the target is
P(w | w in L, |w| <= T). Results: the weighted posterior over distinct outputs, the estimate
Zhat of P(L), the final ESS, the number of resamplings and of live particles.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..engines.base import Matcher
from ..lm.base import LanguageModel, logsumexp, softmax_pair
from .awrs import IMPROPER, PAPER, paper_step, recursive_step
from .base import Generation, advance_or_fail, now


@dataclass
class Particle:
    matcher: Matcher
    tokens: list[int] = field(default_factory=list)
    log_w: float = 0.0
    done: bool = False


def log_mean_exp(a: np.ndarray) -> float:
    m = float(np.max(a))
    if not math.isfinite(m):
        return -math.inf
    return m + math.log(float(np.mean(np.exp(a - m))))


def ess(log_w: np.ndarray) -> float:
    m = np.max(log_w)
    if not np.isfinite(m):
        return 0.0
    w = np.exp(log_w - m)
    w /= w.sum()
    return float(1.0 / np.sum(w * w))


def resample(log_w: np.ndarray, rng: np.random.Generator, scheme: str) -> np.ndarray:
    w = np.exp(log_w - np.max(log_w))
    w /= w.sum()
    n = len(w)
    if scheme == "multinomial":
        return rng.choice(n, size=n, p=w)
    positions = (np.arange(n) + rng.random(n)) / n  # stratified
    return np.minimum(np.searchsorted(np.cumsum(w), positions), n - 1)


class AWRSSMCSampler:
    """N = 1 with no resampling is plain AWRS (single sequence, weighted)."""

    name = "awrs-smc"

    def __init__(self, particles: int = 5, ess_threshold: float = 0.5, resampling: str = "multinomial",
                 variant: str = "paper", proper_weights: bool = True) -> None:
        """AWRS samples the LM at temperature 1 (the exact target), so it takes no temperature."""
        if particles < 1:
            raise ValueError("particles must be >= 1")
        if resampling not in ("multinomial", "stratified"):
            raise ValueError("resampling must be 'multinomial' or 'stratified'")
        if variant not in ("paper", "recursive"):
            raise ValueError("variant must be 'paper' or 'recursive'")
        self.particles = particles
        self.ess_threshold = ess_threshold
        self.resampling = resampling
        self.variant = variant
        self.proper_weights = proper_weights

    def settings(self) -> dict[str, Any]:
        return {"sampler": self.name, "particles": self.particles, "ess_threshold": self.ess_threshold,
                "resampling": self.resampling, "variant": self.variant, "proper_weights": self.proper_weights,
                "temperature": 1.0, "evaluations_count": "every check, repeats of x included"}

    def _step(self, logp: np.ndarray, p: np.ndarray, check, rng: np.random.Generator):
        if self.variant == "recursive" and self.proper_weights:
            return recursive_step(logp, check, rng, p=p)
        return paper_step(logp, check, rng, PAPER if self.proper_weights else IMPROPER, p=p)

    def generate(self, lm: LanguageModel, matcher: Matcher, prompt: Sequence[int], max_tokens: int, seed: int,
                 deadline: float | None = None) -> Generation:
        rng = np.random.default_rng(seed)
        eos = lm.tokenizer.eos_id
        stops = lm.tokenizer.stops
        stop_list = sorted(stops)
        gen = Generation()
        start = now()
        parts = [Particle(matcher)] + [Particle(matcher.fork()) for _ in range(self.particles - 1)]
        resamplings = 0
        try:
            for step_index in range(max_tokens + 1):
                live = [p for p in parts if not p.done]
                if not live:
                    break
                if deadline is not None and now() > deadline:
                    gen.finish_reason = "timeout"
                    break
                for part in live:
                    t0 = now()
                    logits = lm.logits(list(prompt) + part.tokens)
                    gen.lm_s += now() - t0
                    logp, probs = softmax_pair(logits)
                    gen.forward_passes += 1
                    checks = [0.0]

                    def check(t: int, m: Matcher = part.matcher) -> bool:
                        c0 = time.perf_counter()
                        ok = m.check(t)
                        checks[0] += time.perf_counter() - c0
                        return ok

                    if step_index == max_tokens:  # forced EOS with its weight correction
                        gen.constraint_evals += 1
                        gen.step_evals.append(1)
                        member = check(eos)
                        part.log_w += logsumexp(logp[stop_list]) if member else -math.inf
                        part.done = True
                    else:
                        step = self._step(logp, probs, check, rng)
                        gen.constraint_evals += step.evaluations
                        gen.step_evals.append(step.evaluations)
                        part.log_w += step.log_weight
                        if not math.isfinite(part.log_w):
                            part.done = True
                        elif step.token in stops:
                            part.done = True
                        else:
                            if not advance_or_fail(gen, part.matcher, step.token):
                                raise RuntimeError(gen.error)
                            part.tokens.append(step.token)
                    gen.check_s += checks[0]
                    if gen.first_token_s is None:
                        gen.first_token_s = now() - start
                log_w = np.array([p.log_w for p in parts])
                if self.particles > 1 and any(not p.done for p in parts) and \
                        ess(log_w) < self.ess_threshold * self.particles:
                    idx = resample(log_w, rng, self.resampling)
                    mean = log_mean_exp(log_w)
                    parts = [Particle(parts[i].matcher.fork(), list(parts[i].tokens), mean, parts[i].done) for i in idx]
                    resamplings += 1
        except Exception as exc:
            gen.finish_reason = "error"
            gen.error = f"{type(exc).__name__}: {exc}"
        log_w = np.array([p.log_w for p in parts])
        gen.particles = [(list(p.tokens), float(p.log_w)) for p in parts]
        posterior: dict[str, float] = {}
        if np.isfinite(np.max(log_w)):
            w = np.exp(log_w - np.max(log_w))
            w /= w.sum()
            for p, wi in zip(parts, w):
                key = lm.tokenizer.decode(p.tokens).decode("utf-8", "replace")
                posterior[key] = posterior.get(key, 0.0) + float(wi)
            chosen = parts[int(rng.choice(len(parts), p=w))]
            gen.tokens = chosen.tokens
            if gen.finish_reason != "error" and gen.finish_reason != "timeout":
                gen.finish_reason = "eos" if len(chosen.tokens) < max_tokens else "max_tokens"
        else:  # every weight is zero: keep the longest text so the row shows what happened
            gen.tokens = max(parts, key=lambda p: len(p.tokens)).tokens
            if gen.finish_reason not in ("error", "timeout"):
                # at max_tokens without a complete member (truncated), else a true dead end
                gen.finish_reason = "max_tokens" if len(gen.tokens) >= max_tokens else "dead_end"
        gen.total_s = now() - start
        gen.extra = {"log_zhat": log_mean_exp(log_w), "ess": ess(log_w), "resamplings": resamplings,
                     "live_particles": int(np.isfinite(log_w).sum()), "particles": self.particles,
                     "log_weights": json.dumps([round(float(x), 6) for x in log_w]),
                     "posterior": json.dumps(posterior, ensure_ascii=False)}
        return gen


class AWRSSampler(AWRSSMCSampler):
    """Single-sequence AWRS: one particle, no resampling; the sequence weight is reported."""

    name = "awrs"

    def __init__(self, variant: str = "paper", proper_weights: bool = True) -> None:
        super().__init__(particles=1, ess_threshold=0.0, variant=variant, proper_weights=proper_weights)
