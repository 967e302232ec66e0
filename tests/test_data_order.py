"""The epoch order: passes, rank shares, windows, and where a resumed epoch starts."""

from __future__ import annotations

import numpy as np
import pytest

from lictrain.data.order import epoch_shape, permutation, stream_slice, windows
from lictrain.errors import ConfigError


def test_permutation_is_a_pure_function_of_seed_epoch_and_cycle() -> None:
    a = permutation(50, seed=1, epoch=3, cycle=0)
    assert sorted(a.tolist()) == list(range(50))
    np.random.seed(123)  # global state must not matter
    assert np.array_equal(a, permutation(50, 1, 3, 0))
    assert not np.array_equal(a, permutation(50, 1, 4, 0))
    assert not np.array_equal(a, permutation(50, 2, 3, 0))


@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_one_pass_puts_each_photo_on_exactly_one_rank(world: int) -> None:
    n = 100
    shares = [stream_slice(n, 0, 5, rank, world, n // world)[0] for rank in range(world)]
    seen = np.concatenate(shares)
    assert len(seen) == (n // world) * world
    assert len(set(seen.tolist())) == len(seen)  # no photo twice, on any rank


def test_a_capped_epoch_cycles_into_the_next_permutation() -> None:
    photos, positions = stream_slice(7, 0, 0, 0, 1, 20)
    assert positions.tolist() == list(range(20))
    assert sorted(photos[:7].tolist()) == list(range(7)) and sorted(photos[7:14].tolist()) == list(range(7))


def test_epoch_shapes() -> None:
    assert (epoch_shape(100, 8, 1, 1, None).batches, epoch_shape(100, 8, 1, 1, None).photos) == (12, 96)
    four = epoch_shape(100, 8, 4, 1, None)
    assert (four.batches, four.photos, four.full_pass) == (50, 100, True)
    assert epoch_shape(100, 8, 1, 2, None).batches == 6  # 50 photos per rank
    capped = epoch_shape(100, 8, 1, 2, 192)
    assert (capped.batches, capped.full_pass) == (12, False)
    assert epoch_shape(10_000, 8, 1, 1, 192).photos == 192
    with pytest.raises(ConfigError, match="--epoch-size 4 is less than one batch of 8"):
        epoch_shape(100, 8, 1, 1, 4)


def test_a_pass_smaller_than_a_batch_is_one_cycling_batch(caplog: pytest.LogCaptureFixture) -> None:
    shape = epoch_shape(4, 8, 1, 1, None)
    assert (shape.batches, shape.photos) == (1, 8)
    assert "less than one batch" in caplog.text


def test_windows_cover_the_epoch_and_a_resumed_epoch_is_its_tail() -> None:
    shape = epoch_shape(30, 4, 3, 1, None)  # 30 photos x 3 crops = 90 crops -> 22 batches, 30 photos
    assert (shape.batches, shape.photos) == (22, 30)
    full = list(windows(30, shape, 0, 2, 0, 1, 4, 3))
    assert sum(w.count for w in full) == 22
    assert [len(w.photos) for w in full] == [4, 4, 4, 4, 4, 4, 4, 2]
    assert full[-1].count == 1  # 2 photos x 3 crops = 6 crops: one whole batch of 4
    tail = list(windows(30, shape, 0, 2, 0, 1, 4, 3, start_batch=7))
    assert tail[0].photos == full[2].photos and (tail[0].first, tail[0].count) == (1, 2)
    assert sum(w.count for w in tail) == 22 - 7
