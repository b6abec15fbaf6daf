"""Pair sampling: cross-subject, groups, reproducibility, epochs and rank shards."""

from __future__ import annotations

import numpy as np
import pytest

from datamodules.samplers import EpochPairSampler, EvalShardSampler
from datamodules.sampling import (
    ListPairSampling,
    PoolPairSampling,
    combined_codes,
    epoch_rng,
    padded_count,
    shard_positions,
)

SUBJECTS = np.repeat(np.arange(50), 4)  # 50 subjects, 4 volumes each
SIDES = np.tile([0, 1], 100)


def test_cross_subject_by_default():
    pairs = PoolPairSampling(SUBJECTS).epoch_pairs(seed=0, epoch=0, n=2000)
    assert pairs.shape == (2000, 2)
    assert np.all(SUBJECTS[pairs[:, 0]] != SUBJECTS[pairs[:, 1]])


def test_intra_subject_allows_same_subject_never_same_volume():
    pairs = PoolPairSampling(SUBJECTS, intra_subject=True).epoch_pairs(0, 0, 4000)
    assert np.all(pairs[:, 0] != pairs[:, 1])
    assert np.any(SUBJECTS[pairs[:, 0]] == SUBJECTS[pairs[:, 1]])


def test_same_group_constraint():
    pairs = PoolPairSampling(SUBJECTS, SIDES).epoch_pairs(0, 0, 2000)
    assert np.all(SIDES[pairs[:, 0]] == SIDES[pairs[:, 1]])
    assert np.all(SUBJECTS[pairs[:, 0]] != SUBJECTS[pairs[:, 1]])
    assert set(SIDES[pairs[:, 0]]) == {0, 1}


def test_combined_group_columns():
    visits = np.repeat([0, 1], 100)
    codes = combined_codes([SIDES, visits])
    pairs = PoolPairSampling(SUBJECTS, codes).epoch_pairs(3, 1, 1000)
    assert np.all(SIDES[pairs[:, 0]] == SIDES[pairs[:, 1]])
    assert np.all(visits[pairs[:, 0]] == visits[pairs[:, 1]])


def test_reproducible_per_epoch_and_different_across_epochs():
    sampling = PoolPairSampling(SUBJECTS)
    a = sampling.epoch_pairs(seed=5, epoch=2, n=300)
    assert np.array_equal(a, PoolPairSampling(SUBJECTS).epoch_pairs(seed=5, epoch=2, n=300))
    assert not np.array_equal(a, sampling.epoch_pairs(seed=5, epoch=3, n=300))
    assert not np.array_equal(a, sampling.epoch_pairs(seed=6, epoch=2, n=300))


def test_targets_cover_the_pool():
    pairs = PoolPairSampling(SUBJECTS).epoch_pairs(0, 0, 5000)
    assert len(np.unique(pairs)) == SUBJECTS.size


def test_dominant_subject_falls_back_to_exact_sampling():
    subjects = np.array([0] * 500 + [1])  # a target other than subject 0 is rare
    pairs = PoolPairSampling(subjects).epoch_pairs(0, 0, 50)
    assert np.all(subjects[pairs[:, 0]] != subjects[pairs[:, 1]])


def test_impossible_pool_is_a_clear_error():
    with pytest.raises(ValueError, match="two subjects"):
        PoolPairSampling(np.zeros(5, dtype=int))
    # groups with a single subject are left out as sources, not fatal
    sampling = PoolPairSampling(np.array([0, 0, 1, 2]), np.array([0, 0, 1, 1]))
    assert set(sampling.draw(epoch_rng(0, 0), 100).ravel()) == {2, 3}


def test_padded_shards_are_disjoint_and_cover():
    for n, world in [(10, 2), (11, 2), (7, 3), (5, 1)]:
        total = padded_count(n, world)
        shards = [shard_positions(total, r, world) for r in range(world)]
        assert len({len(s) for s in shards}) == 1
        joined = np.concatenate(shards)
        assert len(joined) == len(set(joined.tolist())) == total >= n


def test_epoch_sampler_two_ranks_disjoint_and_cover_epoch():
    sampling = PoolPairSampling(SUBJECTS)
    ranks = [EpochPairSampler(sampling, 101, seed=1, rank=r, world_size=2) for r in range(2)]
    for epoch in (0, 1):
        keys = []
        for sampler in ranks:
            sampler.set_epoch(epoch)
            keys.append(list(sampler))
        assert len(keys[0]) == len(keys[1]) == len(ranks[0]) == 51
        positions = [{k[1] for k in ks} for ks in keys]
        assert not positions[0] & positions[1]
        assert positions[0] | positions[1] == set(range(102))
        expected = sampling.epoch_pairs(1, epoch, 102)
        for epoch_, pos, src, tgt in keys[0] + keys[1]:
            assert epoch_ == epoch and (src, tgt) == tuple(expected[pos])
    ranks[0].set_epoch(0)
    assert list(ranks[0]) != keys[0]  # keys[0] holds epoch 1


def test_list_sampling_permutes_each_epoch():
    pairs = np.arange(20).reshape(10, 2)
    sampling = ListPairSampling(pairs)
    e0, e1 = sampling.epoch_pairs(0, 0, 10), sampling.epoch_pairs(0, 1, 10)
    assert sorted(map(tuple, e0)) == sorted(map(tuple, pairs))
    assert not np.array_equal(e0, e1)
    assert sampling.epoch_pairs(0, 0, 25).shape == (25, 2)


def test_eval_shards_pad_to_equal_length():
    for length, world in [(5, 2), (4, 2), (3, 1)]:
        shards = [list(EvalShardSampler(length, r, world)) for r in range(world)]
        assert len({len(s) for s in shards}) == 1
        assert set().union(*map(set, shards)) == set(range(length))
