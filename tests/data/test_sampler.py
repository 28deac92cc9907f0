# SPDX-License-Identifier: Apache-2.0
"""TwoStreamBatchSampler: batch composition, epoch reshuffle, secondary cycling; infinite_batches."""

from __future__ import annotations

import itertools

import pytest

from medkd.data.sampler import TwoStreamBatchSampler, infinite_batches

PRIMARY = list(range(10))
SECONDARY = list(range(100, 107))


@pytest.mark.parametrize("batch_size, secondary_bs, length", [(4, 2, 5), (6, 3, 3), (5, 1, 2), (11, 1, 1)])
def test_batch_composition(batch_size, secondary_bs, length):
    sampler = TwoStreamBatchSampler(PRIMARY, SECONDARY, batch_size, secondary_bs)
    batches = list(sampler)
    assert len(sampler) == len(batches) == length
    primary_bs = batch_size - secondary_bs
    for batch in batches:
        assert len(batch) == batch_size and all(isinstance(i, int) for i in batch)
        assert set(batch[:primary_bs]) <= set(PRIMARY) and set(batch[primary_bs:]) <= set(SECONDARY)
    used = [i for b in batches for i in b[:primary_bs]]
    assert len(used) == len(set(used)) == length * primary_bs  # each primary index at most once per epoch


def test_epochs_reshuffle_and_are_reproducible():
    a = TwoStreamBatchSampler(PRIMARY, SECONDARY, 4, 2, seed=3)
    b = TwoStreamBatchSampler(PRIMARY, SECONDARY, 4, 2, seed=3)
    first, second = list(a), list(a)
    assert first != second  # iterating again is the next epoch
    assert sorted(i for bt in first for i in bt[:2]) == PRIMARY
    assert list(b) == first and list(b) == second  # same seed, same epochs
    b.set_epoch(1)
    assert list(b) == second  # resumable
    assert list(TwoStreamBatchSampler(PRIMARY, SECONDARY, 4, 2, seed=4)) != first


def test_secondary_cycles_with_a_reshuffle_each_cycle():
    sampler = TwoStreamBatchSampler(list(range(40)), SECONDARY, 4, 2, seed=0)
    stream = [i for batch in sampler for i in batch[2:]]
    assert len(stream) == 40  # 20 batches x 2: the 7 secondary indices cycle almost 6 times
    cycles = [stream[k : k + 7] for k in range(0, 35, 7)]
    assert all(sorted(cycle) == SECONDARY for cycle in cycles)
    assert len({tuple(cycle) for cycle in cycles}) > 1


@pytest.mark.parametrize(
    "primary, secondary, bs, sbs, match",
    [
        (range(2), range(5), 4, 1, "primary stream"),
        (range(5), range(1), 4, 2, "secondary stream"),
        (range(5), range(5), 4, 0, "secondary_batch_size"),
        (range(5), range(5), 4, 4, "secondary_batch_size"),
    ],
)
def test_too_small_streams_raise(primary, secondary, bs, sbs, match):
    with pytest.raises(ValueError, match=match):
        TwoStreamBatchSampler(primary, secondary, bs, sbs)


def test_infinite_batches_loops_epochs():
    sampler = TwoStreamBatchSampler(range(4), range(10, 13), 3, 1, seed=0)
    batches = list(itertools.islice(infinite_batches(sampler), 6))  # 2 batches per epoch -> 3 epochs
    epochs = [batches[k : k + 2] for k in range(0, 6, 2)]
    assert all(sorted(i for b in e for i in b[:2]) == [0, 1, 2, 3] for e in epochs)
    assert len({str(e) for e in epochs}) > 1


def test_infinite_batches_rejects_an_empty_loader():
    with pytest.raises(ValueError, match="no batch"):
        next(infinite_batches([]))
