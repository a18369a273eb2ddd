"""Distances between a sampler's distribution and the exact target (ALGORITHMS.md section 6).

Distributions are arrays over the strings of L in the target's order; mass a sampler puts
outside L (dead ends, truncations, invalid outputs) is passed as `outside` and counts fully
in TV and makes KL infinite. The null band is the TV that exact sampling itself shows with
the same number of draws: a result inside it cannot be told from exact.
"""
from __future__ import annotations

import math

import numpy as np


def tv(q_hat: np.ndarray, q: np.ndarray, outside: float = 0.0) -> float:
    return 0.5 * (float(np.abs(q_hat - q).sum()) + outside)


def kl(q_hat: np.ndarray, q: np.ndarray, outside: float = 0.0, log_q: np.ndarray | None = None) -> float:
    """KL(q_hat || Q) in nats; infinite if q_hat has mass outside L or where Q is 0. With log_q,
    Q's logarithms are taken from it, so token sequences whose Q underflows a float still count."""
    if outside > 0:
        return math.inf
    m = q_hat > 0
    if log_q is not None:
        lq = log_q[m]
    elif np.any(q[m] <= 0):
        return math.inf
    else:
        lq = np.log(q[m])
    if np.any(~np.isfinite(lq)):
        return math.inf
    return float(np.sum(q_hat[m] * (np.log(q_hat[m]) - lq)))


def null_band(q: np.ndarray, n: int, reps: int = 200, seed: int = 0) -> tuple[float, float]:
    """Mean and 95th percentile of TV(empirical of n exact draws from Q, Q) over `reps` repetitions."""
    rng = np.random.default_rng(seed)
    p = q / q.sum()
    tvs = [tv(rng.multinomial(n, p) / n, p) for _ in range(reps)]
    return float(np.mean(tvs)), float(np.percentile(tvs, 95))


def empirical(samples: list[tuple[int, ...] | None], index: dict[tuple[int, ...], int], size: int,
              weights: list[float] | None = None) -> tuple[np.ndarray, float]:
    """(distribution over L, mass outside L) of samples; None marks a failed sample. With
    weights (unnormalised, e.g. pooled SMC particles), a weighted empirical distribution."""
    dist = np.zeros(size)
    outside = 0.0
    w = weights if weights is not None else [1.0] * len(samples)
    for s, wi in zip(samples, w):
        i = index.get(s) if s is not None else None
        if i is None:
            outside += wi
        else:
            dist[i] += wi
    total = dist.sum() + outside
    if total <= 0:
        return dist, 1.0
    return dist / total, outside / total


def marginalise(values: np.ndarray, keys: list[str]) -> tuple[np.ndarray, list[str]]:
    """Sum a distribution over token sequences into one over the strings they spell."""
    order: dict[str, int] = {}
    for k in keys:
        order.setdefault(k, len(order))
    out = np.zeros(len(order))
    for v, k in zip(values, keys):
        out[order[k]] += v
    return out, list(order)
