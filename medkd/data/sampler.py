# SPDX-License-Identifier: Apache-2.0
"""Two-stream batch sampling (labelled + unlabelled in every batch) and an endless batch iterator.

A port of the mean-teacher ``TwoStreamBatchSampler`` used by SSL4MIS and BCP: an epoch is one pass over
the shuffled primary (labelled) indices; the secondary (unlabelled) indices cycle as often as needed, with
a fresh shuffle on every cycle. The shuffles come from a private generator seeded by ``(seed, epoch)``, so
each epoch is reproducible on its own (and resumable through :meth:`TwoStreamBatchSampler.set_epoch`).

Example:
    >>> sampler = TwoStreamBatchSampler(range(4), range(4, 10), batch_size=4, secondary_batch_size=2)
    >>> len(sampler), [len(b) for b in sampler]
    (2, [4, 4])
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

import numpy as np
from torch.utils.data import Sampler

__all__ = ["TwoStreamBatchSampler", "infinite_batches"]

T = TypeVar("T")


class TwoStreamBatchSampler(Sampler[list[int]]):
    """Batches of ``batch_size - secondary_batch_size`` primary indices followed by ``secondary_batch_size``
    secondary ones.

    Each iteration over the sampler is one epoch: the primary indices are reshuffled and consumed once
    (an incomplete last batch is dropped, so ``len == len(primary) // primary_batch_size``); the secondary
    indices restart at each epoch and cycle eternally within it, reshuffled every cycle. Iterating again
    gives the next epoch, with a different shuffle.

    Args:
        primary_indices: dataset indices of the primary (labelled) stream.
        secondary_indices: dataset indices of the secondary (unlabelled) stream.
        batch_size: total batch size.
        secondary_batch_size: secondary indices per batch (``0 < secondary_batch_size < batch_size``).
        seed: seed of the sampler's generator; epoch ``e`` uses ``np.random.default_rng([seed, e])``.

    Raises:
        ValueError: if a stream is smaller than its share of a batch, or the batch split is not positive.

    Example:
        >>> s = TwoStreamBatchSampler([0, 1], [2, 3, 4], batch_size=3, secondary_batch_size=2, seed=1)
        >>> batch = next(iter(s))
        >>> sorted(batch[:1]) in ([0], [1]), set(batch[1:]) <= {2, 3, 4}
        (True, True)
    """

    def __init__(
        self,
        primary_indices: Sequence[int],
        secondary_indices: Sequence[int],
        batch_size: int,
        secondary_batch_size: int,
        seed: int = 0,
    ) -> None:
        self.primary_indices = np.asarray(list(primary_indices), dtype=np.int64)
        self.secondary_indices = np.asarray(list(secondary_indices), dtype=np.int64)
        self.secondary_batch_size = int(secondary_batch_size)
        self.primary_batch_size = int(batch_size) - self.secondary_batch_size
        self.seed = int(seed)
        self.epoch = 0
        if self.primary_batch_size < 1 or self.secondary_batch_size < 1:
            raise ValueError(
                f"need 0 < secondary_batch_size < batch_size, got batch_size={batch_size}, "
                f"secondary_batch_size={secondary_batch_size}"
            )
        if len(self.primary_indices) < self.primary_batch_size:
            raise ValueError(
                f"primary stream has {len(self.primary_indices)} indices, fewer than its "
                f"{self.primary_batch_size} per batch"
            )
        if len(self.secondary_indices) < self.secondary_batch_size:
            raise ValueError(
                f"secondary stream has {len(self.secondary_indices)} indices, fewer than its "
                f"{self.secondary_batch_size} per batch"
            )

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration epoch ``epoch`` (e.g. when resuming a run)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.primary_indices) // self.primary_batch_size

    def _secondary_stream(self, rng: np.random.Generator) -> Iterator[int]:
        while True:
            yield from rng.permutation(self.secondary_indices).tolist()

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        primary = rng.permutation(self.primary_indices).tolist()
        secondary = self._secondary_stream(rng)
        for b in range(len(self)):
            batch = primary[b * self.primary_batch_size : (b + 1) * self.primary_batch_size]
            yield batch + list(itertools.islice(secondary, self.secondary_batch_size))


def infinite_batches(loader: Iterable[T]) -> Iterator[T]:
    """Loop over ``loader`` epoch after epoch, forever (each pass re-iterates it, so samplers reshuffle).

    Args:
        loader: any re-iterable, typically a ``DataLoader``.

    Returns:
        An endless iterator of the loader's items.

    Raises:
        ValueError: if an epoch yields nothing (which would otherwise loop forever).

    Example:
        >>> it = infinite_batches([1, 2])
        >>> [next(it) for _ in range(5)]
        [1, 2, 1, 2, 1]
    """
    while True:
        empty = True
        for item in loader:
            empty = False
            yield item
        if empty:
            raise ValueError("infinite_batches: the loader yielded no batch in a whole epoch")
