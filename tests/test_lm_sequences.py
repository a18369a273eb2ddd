"""KV sequences of LlamaCppLM: which sequence serves a prefix (pure bookkeeping), bit-identical
logits for many interleaved branches against a fresh model decoding each prefix straight, SMC's
pattern (resampled particles) never evaluating a token twice, and the batched option."""
from __future__ import annotations

import numpy as np
import pytest

from harness.lm.kv_sequences import SlotTable, common_prefix, sequences_for


def _table(contents: list[list[int]], exact: list[int] | None = None) -> SlotTable:
    table = SlotTable(len(contents))
    for i, (slot, tokens) in enumerate(zip(table.slots, contents)):
        slot.reset(tokens, exact=len(tokens) if exact is None else exact[i])
        table.touch(slot)
    return table


def test_common_prefix():
    assert common_prefix([1, 2, 3], [1, 2, 4, 5]) == 2
    assert common_prefix([], [1]) == 0 and common_prefix([1, 2], [1, 2]) == 2


def test_best_slot_is_the_longest_common_prefix_ties_most_recent():
    table = _table([[1, 2, 3], [1, 2, 9, 9], [1, 2, 3]])
    slot, n = table.best([1, 2, 3, 4], exact=True)
    assert (slot.seq_id, n) == (2, 3)  # slots 0 and 2 tie; 2 was used last
    table.touch(table.slots[0])
    assert table.best([1, 2, 3, 4], exact=True)[0].seq_id == 0
    assert table.best([1, 2, 9, 9, 1], exact=True) == (table.slots[1], 4)


def test_exact_requests_ignore_batch_evaluated_tokens():
    table = _table([[1, 2, 3, 4, 5], [1, 2, 3, 4]], exact=[3, 4])  # slot 0: tokens 4, 5 came from a batch
    assert table.best([1, 2, 3, 4, 5, 6], exact=True) == (table.slots[1], 4)
    assert table.best([1, 2, 3, 4, 5, 6], exact=False) == (table.slots[0], 5)
    table.slots[0].logits = table.slots[1].logits = np.zeros(2)
    assert table.holding([1, 2, 3, 4, 5], exact=True) is None
    assert table.holding([1, 2, 3, 4, 5], exact=False) is table.slots[0]
    assert table.holding([1, 2, 3, 4], exact=True) is table.slots[1]


def test_victim_is_least_recently_used_outside_the_claimed():
    table = _table([[1], [1, 2], [1, 3]])
    assert table.victim().seq_id == 0
    assert table.victim({0}).seq_id == 1
    assert table.victim({0, 1, 2}) is None
    table.clear()
    assert all(s.tokens == [] and s.used == -1 for s in table.slots)


def test_sequences_for_smc_is_two_per_particle():
    assert sequences_for(["awrs-smc"], 5) == 10
    assert sequences_for(["masking", "awrs"], 5) == 1


# --- the real model ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def reference(gemma_path):
    """A second model with one sequence: every prefix decoded straight from its prompt."""
    from harness.lm.llamacpp import LlamaCppLM

    return LlamaCppLM(gemma_path, n_ctx=256)


def straight(ref, prompt: list[int], prefix: list[int]) -> np.ndarray:
    """Straight decoding: the prompt as one batch, then every later token alone."""
    ref.forget()
    out = ref.logits(prompt)
    for n in range(len(prompt) + 1, len(prefix) + 1):
        out = ref.logits(prefix[:n])
    return out.copy()


def softmax(logits: np.ndarray) -> np.ndarray:
    p = np.exp(logits.astype(np.float64) - logits.max())
    return p / p.sum()


def random_tree(prompt: list[int], rng: np.random.Generator, n: int) -> list[list[int]]:
    """n prefixes, each a random earlier one (or the prompt) plus 1-3 tokens."""
    prefixes = [prompt]
    for _ in range(n):
        base = prefixes[int(rng.integers(len(prefixes)))]
        prefixes.append(base + [int(t) for t in rng.integers(300, 20000, size=int(rng.integers(1, 4)))])
    return prefixes[1:]


def test_interleaved_branches_are_bit_identical_to_straight_decoding(gemma_path, reference):
    from harness.lm.llamacpp import LlamaCppLM

    lm = LlamaCppLM(gemma_path, n_ctx=256, n_seq=3)
    prompt = lm.encode_chat([{"role": "user", "content": "Say a number."}])
    rng = np.random.default_rng(7)
    tree = random_tree(prompt, rng, 10)
    lm.logits(prompt)
    asked = tree + [tree[int(i)] for i in rng.integers(len(tree), size=4)]  # revisits, after eviction
    asked += [p[:-1] for p in tree[:3] if len(p) - 1 > len(prompt)]  # strict prefixes of cached ones
    got = [(p, lm.logits(p).copy()) for p in asked]
    assert lm.copies > 0  # branches were served by copies into other sequences
    for prefix, logits in got:
        assert np.array_equal(logits, straight(reference, prompt, prefix)), len(prefix)


def smc_like(lm, prompt: list[int], particles: int, steps: int, seed: int) -> int:
    """Particles extending by one token a step with resampling (duplicates, deaths) between
    steps; returns the number of distinct prefixes asked after the prompt."""
    rng = np.random.default_rng(seed)
    parts = [[] for _ in range(particles)]
    asked = set()
    lm.logits(prompt)
    for _ in range(steps):
        for i, tokens in enumerate(parts):
            tokens.append(int(rng.integers(300, 20000)))
            lm.logits(prompt + tokens)
            asked.add(tuple(tokens))
        parts = [list(parts[int(a)]) for a in rng.integers(particles, size=particles)]
    return len(asked)


def test_two_sequences_per_particle_never_evaluate_a_token_twice(gemma_path):
    from harness.lm.llamacpp import LlamaCppLM

    particles = 3
    lm = LlamaCppLM(gemma_path, n_ctx=256, n_seq=sequences_for(["awrs-smc"], particles))
    prompt = lm.encode("Count:")
    distinct = smc_like(lm, prompt, particles, steps=6, seed=3)
    assert lm.forward_tokens == len(prompt) + distinct
    one = LlamaCppLM(gemma_path, n_ctx=256)  # one sequence: every switch re-evaluates a suffix
    smc_like(one, prompt, particles, steps=6, seed=3)
    assert one.forward_tokens > len(prompt) + distinct


def test_batched_logits(gemma_path, reference):
    """One prefix in a batch is the exact schedule; siblings and a repeat share one decode;
    exact requests never build on batch-evaluated tokens (a batch of 8 moves logits here)."""
    from harness.lm.llamacpp import LlamaCppLM

    lm = LlamaCppLM(gemma_path, n_ctx=256, n_seq=9, lm_batch=True)
    prompt = lm.encode("Count:")
    lm.logits(prompt)
    one = prompt + [1000]
    assert np.array_equal(lm.logits_many([one])[0], straight(reference, prompt, one))
    kids = [one + [2000 + 7 * i] for i in range(8)]
    decodes = lm.decodes
    many = lm.logits_many(kids + [kids[0]])
    assert lm.decodes == decodes + 1 and np.array_equal(many[0], many[-1])
    exact = [softmax(straight(reference, prompt, kid)) for kid in kids]
    for i, logits in enumerate(many[:-1]):  # each answer is its own prefix's, not a neighbour's
        tv = [0.5 * np.abs(softmax(logits) - q).sum() for q in exact]
        assert int(np.argmin(tv)) == i, tv
    for kid in kids[:3]:
        longer = kid + [4242]
        assert np.array_equal(lm.logits(longer), straight(reference, prompt, longer))
        assert np.array_equal(lm.logits(kid), straight(reference, prompt, kid))
