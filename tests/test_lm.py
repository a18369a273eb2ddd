"""LM seam: prefix-cached logits equal fresh ones after branching; the toy LM's exact numbers."""
from __future__ import annotations

import itertools

import numpy as np

from harness.lm.tabular import toy_binary_lm


def test_toy_lm_gives_published_p_of_l():
    lm = toy_binary_lm()
    lang = ["00000"] + ["1" + "".join(p) for p in itertools.product("01", repeat=4)]
    total = 0.0
    for s in lang:
        ids = [int(c) for c in s]
        total += np.exp(sum(lm.logprobs(ids[:i])[ids[i] if i < len(ids) else 2] for i in range(len(ids) + 1)))
    assert abs(total - 0.02892) < 5e-6


def test_llamacpp_prefix_cache_matches_fresh_evaluation(gemma_lm, gemma_path):
    from harness.lm.llamacpp import LlamaCppLM

    lm = gemma_lm
    prompt = lm.encode_chat([{"role": "user", "content": "Say a number."}])
    a = lm.encode("12345")
    b = lm.encode("98")
    branch_a = prompt + a
    branch_b = prompt + b
    lm.logits(prompt)  # samplers always start with the prompt: it becomes the batch-evaluated anchor
    la = lm.logits(branch_a).copy()
    lb = lm.logits(branch_b).copy()          # backtracks to the prompt, then extends
    la_again = lm.logits(branch_a).copy()    # and back again
    shorter = lm.logits(prompt).copy()       # a strict prefix of what is cached
    fresh = LlamaCppLM(gemma_path, n_ctx=512)
    fresh.logits(prompt)
    step = list(prompt)
    for t in a:  # a fresh model walking branch a token by token
        step.append(t)
        fresh_a = fresh.logits(step).copy()
    # the evaluation schedule is fixed (prompt as a batch, then token by token), so the
    # numbers are a function of the prefix alone, whatever was evaluated before
    assert np.array_equal(la, fresh_a)
    assert np.array_equal(la, la_again)
    fresh_b = LlamaCppLM(gemma_path, n_ctx=512)
    fresh_b.logits(prompt)
    assert np.array_equal(lb, fresh_b.logits(branch_b))
    assert np.array_equal(shorter, fresh_b.logits(prompt))
    assert not np.allclose(la, lb, atol=1e-3)
    lp = lm.logprobs(branch_a)
    assert abs(np.exp(lp).sum() - 1.0) < 1e-6


def test_gemma_tokenizer_view(gemma_tok):
    view = gemma_tok.view
    assert view.vocab_size == 262144
    assert view.token_bytes[view.eos_id] == b"" and view.eos_id in view.special_ids
    text = '{"name":"Zoë","n":[1,2]}'
    assert view.decode(gemma_tok.encode(text)) == text.encode()
