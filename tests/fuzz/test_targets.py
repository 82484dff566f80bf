"""Every fuzz target (tests/support/fuzz_targets.py, fuzz_tables.py) on Hypothesis-drawn
inputs: mutated seeds and generated inputs from a Hypothesis-controlled Random, and plain
bytes. A target raises only when an invariant breaks or an undocumented exception escapes."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from support.fuzz_tables import TABLE_TARGETS
from support.fuzz_targets import TARGETS
from support.fuzzing import Target, next_input

ALL = TARGETS + TABLE_TARGETS


@pytest.mark.parametrize("target", ALL, ids=[t.name for t in ALL])
def test_seeds_are_accepted(target: Target) -> None:
    for seed in target.seeds:
        target.run(seed)


@pytest.mark.parametrize("target", ALL, ids=[t.name for t in ALL])
@given(rng=st.randoms(use_true_random=False))
def test_mutated_and_generated_inputs(target: Target, rng: random.Random) -> None:
    for _ in range(5):
        target.run(next_input(target, rng))


@pytest.mark.parametrize("target", ALL, ids=[t.name for t in ALL])
@given(data=st.binary(max_size=512))
def test_random_bytes(target: Target, data: bytes) -> None:
    target.run(data)
