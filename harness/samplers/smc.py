"""AWRS as a sampler: one sequence (`awrs`) or N particles with resampling (`awrs-smc`).

Each particle extends by AWRS steps (ALGORITHMS.md 3.5): its log-weight accumulates the
steps' log-weights, an unbiased estimate of the product of local allowed masses W(w). When
the effective sample size falls below `ess_threshold * N` the particles are resampled
(multinomial or stratified, recorded) and every weight is reset to the mean. At max_tokens
EOS is forced with its weight correction p(stop|u) * member(u) (mass of every stop token), so the target is
P(w | w in L, |w| <= T); a sample ending so finishes as `forced_stop`. Results: the weighted
posterior over distinct outputs, the estimate Zhat of P(L), the final ESS, the number of
resamplings and of live particles. When every weight is zero there is no sample: no output
text, finish `dead_end`, and the longest dead particle's text only in `dead_end_text`.
Forking a matcher is engine work (outlines replays the whole history): timed, booked into
the row's `fork_s` (part of engine_s).
An LM built with `lm_batch` (--lm-batch) that has `logits_many` gets the live particles' prefixes
in one call, their new tokens evaluated in one llama.cpp batch: faster, but the logits then
depend on the batch (rows say so in x_lm_batch). Otherwise every particle asks `logits` alone,
and an LM with one KV sequence per particle (LlamaCppLM n_seq) never re-evaluates a suffix.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..engines.base import Matcher
from ..lm.base import LanguageModel, logsumexp
from .awrs import IMPROPER, PAPER, paper_walk, recursive_walk, visitor
from .masked_rest import StepOracle
from .visiting import StepTables, logit_tables
from .base import Generation, Seams, advance_or_fail, run_generation


@dataclass
class Particle:
    matcher: Matcher
    tokens: list[int] = field(default_factory=list)
    log_w: float = 0.0
    done: bool = False
    forced: bool = False  # completed by the forced stop at the length bound


def mask_budget(value: int | str | None) -> int | None:
    """--sampler-args mask_after: a number of checks >= 0, or None / "never" (checks only)."""
    if value is None or value == "never":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"mask_after must be a number of checks >= 0 or 'never', not {value!r}")
    return value


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


def reset_weights(log_w: np.ndarray, ancestors: np.ndarray) -> np.ndarray:
    """Log-weights after resampling: every particle gets the mean of the weights before it
    (ALGORITHMS.md 3.5), which keeps the final mean weight Zhat unbiased for P(L)."""
    return np.full(len(ancestors), log_mean_exp(log_w))


class AWRSSMCSampler:
    """N = 1 with no resampling is plain AWRS (single sequence, weighted)."""

    name = "awrs-smc"

    def __init__(self, particles: int = 5, ess_threshold: float = 0.5, resampling: str = "multinomial",
                 variant: str = "paper", proper_weights: bool = True, mask_after: int | str | None = None) -> None:
        """AWRS samples the LM at temperature 1 (the exact target), so it takes no temperature.
        mask_after: a step that has made this many single-token checks finishes from the engine's
        full mask (masked_rest.py: same law, fewer engine calls); None or "never": checks only."""
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
        self.mask_after = mask_budget(mask_after)
        self._buffers: object | None = None  # where p lives, reused step after step (StepTables.buffers)
        from .step_kernels import warm_up
        warm_up()  # compiled here, not inside the first generation's time
        if self.mask_after is not None:
            from .mask_kernels import warm_up as warm_up_masks
            warm_up_masks()

    def settings(self) -> dict[str, Any]:
        return {"sampler": self.name, "particles": self.particles, "ess_threshold": self.ess_threshold,
                "resampling": self.resampling, "variant": self.variant, "proper_weights": self.proper_weights,
                "mask_after": self.mask_after if self.mask_after is not None else "never",
                "temperature": 1.0, "evaluations_count": "every check, repeats of x included; |V| per mask (mask_after)"}

    def _step(self, tables: StepTables, matcher: Matcher, rng: np.random.Generator):
        visit = visitor(tables, rng)
        check = matcher.check if self.mask_after is None else StepOracle(matcher, tables, rng, self.mask_after)
        if self.variant == "recursive" and self.proper_weights:
            return recursive_walk(tables, check, visit)
        return paper_walk(tables, check, visit, PAPER if self.proper_weights else IMPROPER)

    def generate(self, lm: LanguageModel, matcher: Matcher, prompt: Sequence[int], max_tokens: int, seed: int,
                 deadline: float | None = None) -> Generation:
        return run_generation(lambda seams: self._run(seams, list(prompt), max_tokens), lm, matcher, seed, deadline)

    def _run(self, s: Seams, prompt: list[int], max_tokens: int) -> None:
        gen = s.gen
        parts = [Particle(s.matcher)] + [Particle(s.matcher.fork()) for _ in range(self.particles - 1)]
        resamplings = steps = 0
        batched = self._batches(s.lm)
        try:
            for step_index in range(max_tokens + 1):
                live = [p for p in parts if not p.done]
                if not live:
                    break
                if s.expired():
                    gen.finish_reason = "timeout"
                    break
                steps += 1
                batch = s.lm.logits_many([prompt + p.tokens for p in live]) if batched else None
                for j, part in enumerate(live):
                    logits = batch[j] if batch is not None else s.lm.logits(prompt + part.tokens)
                    self._extend(s, part, logits, step_index == max_tokens)
                    s.first_token()
                log_w = np.array([p.log_w for p in parts])
                if self.particles > 1 and any(not p.done for p in parts) and \
                        ess(log_w) < self.ess_threshold * self.particles:
                    parts = self._resample(parts, s.rng)
                    resamplings += 1
        except Exception as exc:  # the particles so far still give the results below
            gen.finish_reason = "error"
            gen.error = f"{type(exc).__name__}: {exc}"
        self._finish(gen, s.lm, parts, s.rng)
        gen.extra.update({"resamplings": resamplings, "smc_steps": steps, "lm_batch": batched})

    def _batches(self, lm: LanguageModel) -> bool:
        """Batch the particles' forward passes: several particles and an LM built to batch."""
        return self.particles > 1 and bool(getattr(lm, "lm_batch", False)) and hasattr(lm, "logits_many")

    def _extend(self, s: Seams, part: Particle, logits: np.ndarray, forced: bool) -> None:
        """One step of one live particle given the logits after its prefix: an AWRS step, or at
        the length bound the forced stop with weight p(stop|u) * member(u) (summed in log space
        from the normalised log-probabilities)."""
        tokenizer = s.lm.tokenizer
        tables = logit_tables(logits, self._buffers)
        self._buffers = tables.buffers  # the next step writes its p into the same arrays
        if forced:
            member = part.matcher.check(tokenizer.eos_id)
            part.log_w += logsumexp(tables.logp_at(sorted(tokenizer.stops))) if member else -math.inf
            part.done = part.forced = True
        else:
            step = self._step(tables, part.matcher, s.rng)
            part.log_w += step.log_weight
            if not math.isfinite(part.log_w) or step.token in tokenizer.stops:
                part.done = True
            else:
                if not advance_or_fail(s.gen, part.matcher, step.token):
                    raise RuntimeError(s.gen.error)
                part.tokens.append(step.token)
        s.step.end()

    def _resample(self, parts: list[Particle], rng: np.random.Generator) -> list[Particle]:
        """Draw N ancestors and reset every weight (reset_weights). A finished particle's matcher
        is never used again, so it is shared; a live ancestor's first copy takes its matcher and
        the others fork it, so only the forks that are needed are made (and timed)."""
        log_w = np.array([p.log_w for p in parts])
        idx = resample(log_w, rng, self.resampling)
        new_w = reset_weights(log_w, idx)
        taken: set[int] = set()
        out = []
        for i, w in zip(idx, new_w):
            a = parts[int(i)]
            if a.done or int(i) not in taken:
                m = a.matcher
                taken.add(int(i))
            else:
                m = a.matcher.fork()  # a counted matcher: the fork is timed as engine work
            out.append(Particle(m, list(a.tokens), float(w), a.done, a.forced))
        return out

    def _finish(self, gen: Generation, lm: LanguageModel, parts: list[Particle], rng: np.random.Generator) -> None:
        """The sample (drawn by weight), its finish reason, the posterior and the SMC results."""
        log_w = np.array([p.log_w for p in parts])
        gen.particles = [(list(p.tokens), float(p.log_w)) for p in parts]
        posterior: dict[str, float] = {}
        ended = gen.finish_reason in ("error", "timeout")
        gen.extra["dead_end_text"] = ""
        if np.isfinite(np.max(log_w)):
            w = np.exp(log_w - np.max(log_w))
            w /= w.sum()
            for p, wi in zip(parts, w):
                key = lm.tokenizer.decode(p.tokens).decode("utf-8", "replace")
                posterior[key] = posterior.get(key, 0.0) + float(wi)
            chosen = parts[int(rng.choice(len(parts), p=w))]
            gen.tokens = chosen.tokens
            if not ended:
                gen.finish_reason = "forced_stop" if chosen.forced else "eos"
        else:  # every weight is zero: no sample, so no output text to score (it would be a dead prefix)
            longest = max(parts, key=lambda p: len(p.tokens))
            gen.extra["dead_end_text"] = lm.tokenizer.decode(longest.tokens).decode("utf-8", "replace")
            gen.tokens = []
            if not ended:
                gen.finish_reason = "dead_end"
        gen.no_output = not np.isfinite(np.max(log_w))
        gen.extra.update({"log_zhat": log_mean_exp(log_w), "ess": ess(log_w),
                          "live_particles": int(np.isfinite(log_w).sum()), "particles": self.particles,
                          "log_weights": json.dumps([round(float(x), 6) for x in log_w]),
                          "posterior": json.dumps(posterior, ensure_ascii=False)})


class AWRSSampler(AWRSSMCSampler):
    """Single-sequence AWRS: one particle, no resampling; the sequence weight is reported."""

    name = "awrs"

    def __init__(self, variant: str = "paper", proper_weights: bool = True,
                 mask_after: int | str | None = None) -> None:
        super().__init__(particles=1, ess_threshold=0.0, variant=variant, proper_weights=proper_weights,
                         mask_after=mask_after)
