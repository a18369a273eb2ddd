"""Samplers do not time or count themselves: the LM and the matcher are wrapped at the seams
(harness.samplers.base.TimedLM / TimedMatcher) inside one template (run_generation). Counts are
checked against counters kept by the wrapped objects themselves."""
from __future__ import annotations

import numpy as np

from harness.samplers.base import run_generation


class CountingLM:
    name = "counting"

    def __init__(self, vocab: int) -> None:
        from harness.lm.base import TokenizerView

        self.tokenizer = TokenizerView(token_bytes=tuple(bytes([65 + i]) for i in range(vocab - 1)) + (b"",),
                                       eos_id=vocab - 1, special_ids=frozenset({vocab - 1}), name="c")
        self.calls = 0

    def logits(self, prefix):
        self.calls += 1
        return np.zeros(self.tokenizer.vocab_size, dtype=np.float32)


class CountingMatcher:
    def __init__(self, log):
        self.log = log

    def fill_mask(self, bitmask):
        self.log["mask"] += 1
        bitmask[:] = -1

    def check(self, token):
        self.log["check"] += 1
        return token % 2 == 0

    def advance(self, token):
        self.log["advance"] += 1
        return True

    def fork(self):
        self.log["fork"] += 1
        return CountingMatcher(self.log)

    def rollback(self, n):
        pass

    def is_accepting(self):
        return False


def test_a_new_sampler_written_against_the_seams_is_counted_without_counting_anything():
    lm = CountingLM(vocab=40)
    log = {"mask": 0, "check": 0, "advance": 0, "fork": 0}

    def body(s):  # a made-up sampler: 3 steps of (logits, mask, 4 checks on a fork, advance)
        bitmask = np.zeros(2, dtype=np.int32)
        for _ in range(3):
            s.lm.logits([1, 2])
            s.matcher.fill_mask(bitmask)
            other = s.matcher.fork()
            for t in range(4):
                other.check(t)
            s.matcher.advance(0)
            s.step.end()
            s.first_token()

    gen = run_generation(body, lm, CountingMatcher(log), seed=0, deadline=None)
    assert gen.forward_passes == lm.calls == 3
    assert len(gen.mask_times) == log["mask"] == 3
    assert gen.constraint_evals == 3 * 40 + log["check"] == 3 * 40 + 12
    assert gen.step_evals == [44, 44, 44] and log["fork"] == 3 and log["advance"] == 3
    assert gen.fork_s > 0 and gen.check_s > 0 and gen.advance_s > 0 and gen.lm_s > 0
    assert gen.total_s >= gen.lm_s + gen.engine_s and gen.first_token_s is not None


def test_a_failure_inside_a_sampler_ends_the_sample_as_an_error_with_its_counts():
    lm = CountingLM(vocab=8)
    log = {"mask": 0, "check": 0, "advance": 0, "fork": 0}

    def body(s):
        s.lm.logits([])
        raise RuntimeError("engine exploded")

    gen = run_generation(body, lm, CountingMatcher(log), seed=0, deadline=None)
    assert gen.finish_reason == "error" and gen.error == "RuntimeError: engine exploded" and gen.forward_passes == 1
