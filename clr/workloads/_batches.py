"""In-memory batching over tensors that already live on the target device."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["TensorBatches"]


class TensorBatches:
    """Epochs of ``(inputs, targets)`` batches sliced from tensors on the target device.

    A much cheaper replacement for :class:`torch.utils.data.DataLoader` when the whole
    dataset fits in device memory: no workers, no collation, no per-sample indexing.
    Each call to ``iter()`` is one epoch. With ``shuffle=True`` the epoch's permutation
    is drawn on the CPU from a private :class:`torch.Generator` seeded with
    ``seed + epoch`` (so the global RNG is never touched and the order is the same on
    every device), the data are gathered once per epoch with one ``index_select`` on the
    device, and each batch is a contiguous view of that copy. Nothing here synchronises
    the host with a CUDA device (the permutation is copied from pinned memory
    asynchronously).

    :meth:`state_dict` records where the next batch comes from (the epoch and the
    batch within it) and :meth:`load_state_dict` makes the next ``iter()`` continue
    from there, so a training resumed from a checkpoint sees the batches an
    uninterrupted one would have, without replaying the epoch.

    Args:
        x: inputs, first dimension indexes samples.
        y: targets, same first dimension and device as ``x``.
        batch_size: samples per batch, a positive integer.
        shuffle: draw a new sample order every epoch.
        drop_last: drop the last partial batch so every batch has ``batch_size`` samples.
        seed: seed of the shuffling generator; epoch ``e`` uses ``seed + e``.

    Raises:
        ValueError: on mismatched tensors, a non-positive ``batch_size``, a negative
            seed, or when ``drop_last`` would leave no batch at all.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool = True,
        drop_last: bool = True,
        seed: int = 0,
    ) -> None:
        if x.dim() == 0 or y.dim() == 0:
            raise ValueError("x and y must have a sample dimension, got 0-dim tensors")
        if x.shape[0] != y.shape[0]:
            raise ValueError(
                f"x and y must have the same number of samples, got {x.shape[0]} and {y.shape[0]}"
            )
        if x.device != y.device:
            raise ValueError(f"x and y must be on the same device, got {x.device} and {y.device}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        n = int(x.shape[0])
        if drop_last and n < batch_size:
            raise ValueError(
                f"batch_size must be <= the number of samples ({n}) when drop_last=True, "
                f"got {batch_size}"
            )
        self.x = x
        self.y = y
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self._n = n
        self._len = n // batch_size if drop_last else math.ceil(n / batch_size)
        self._epoch = 0
        self._start_batch = 0  # where the next iter() starts (set by load_state_dict)
        self._position = (0, 0)  # (epoch, batch) of the next batch a consumer would get

    @property
    def num_samples(self) -> int:
        """Number of samples in the underlying tensors."""
        return self._n

    @property
    def device(self) -> torch.device:
        """Device of the batches."""
        return self.x.device

    @property
    def epoch(self) -> int:
        """Index of the epoch the next ``iter()`` will produce."""
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``iter()`` produce epoch ``epoch`` (to resume or replay an order).

        Args:
            epoch: non-negative epoch index.

        Raises:
            ValueError: if ``epoch`` is negative.
        """
        if epoch < 0:
            raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}")
        self._epoch = epoch
        self._start_batch = 0
        self._position = (epoch, 0)

    _IDENTITY = ("num_samples", "batch_size", "seed", "shuffle", "drop_last")

    def state_dict(self) -> dict[str, Any]:
        """Where the next batch comes from, plus what fixes the data order.

        Returns:
            ``{"epoch", "batch"}``, the position of the next batch (a finished
            epoch counts as the start of the next), and ``num_samples``,
            ``batch_size``, ``seed``, ``shuffle``, ``drop_last``, which
            :meth:`load_state_dict` checks so a state is never applied to other data.
        """
        epoch, batch = self._position
        if batch >= self._len:
            epoch, batch = epoch + 1, 0
        return {
            "epoch": epoch,
            "batch": batch,
            "num_samples": self._n,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Make the next ``iter()`` continue from a :meth:`state_dict`'s position.

        That iterator yields the rest of the saved epoch (the same order: the
        permutation depends only on ``seed`` and the epoch); the ones after it
        are whole epochs again.

        Args:
            state_dict: a dict from :meth:`state_dict`.

        Raises:
            ValueError: naming the key, when the state comes from a loader over
                other data or another order, or its position is not one of this loader's.
        """
        mine = self.state_dict()
        for key in self._IDENTITY:
            if key not in state_dict:
                raise ValueError(f"state_dict has no {key!r}")
            if state_dict[key] != mine[key]:
                raise ValueError(
                    f"state_dict's {key} is {state_dict[key]!r} but this loader's is "
                    f"{mine[key]!r}: it would continue a different data order"
                )
        epoch, batch = state_dict.get("epoch"), state_dict.get("batch")
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"state_dict's epoch must be a non-negative integer, got {epoch!r}")
        if isinstance(batch, bool) or not isinstance(batch, int) or not 0 <= batch < self._len:
            raise ValueError(
                f"state_dict's batch must be an integer in [0, {self._len}), got {batch!r}"
            )
        self._epoch = epoch
        self._start_batch = batch
        self._position = (epoch, batch)

    def __len__(self) -> int:
        """Number of batches per epoch."""
        return self._len

    def _permutation(self, epoch: int) -> torch.Tensor:
        gen = torch.Generator(device="cpu")
        gen.manual_seed(self.seed + epoch)
        perm = torch.randperm(self._n, generator=gen)
        if self.device.type == "cpu":
            return perm
        if self.device.type == "cuda":
            perm = perm.pin_memory()
        return perm.to(self.device, non_blocking=True)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield one epoch of ``(inputs, targets)`` batches."""
        epoch, start = self._epoch, self._start_batch
        self._epoch += 1
        self._start_batch = 0
        self._position = (epoch, start)
        if self.shuffle:
            perm = self._permutation(epoch)
            xs = self.x.index_select(0, perm)
            ys = self.y.index_select(0, perm)
        else:
            xs, ys = self.x, self.y
        return self._slices(xs, ys, epoch, start)

    def _slices(
        self, xs: torch.Tensor, ys: torch.Tensor, epoch: int, first: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        bs = self.batch_size
        for i in range(first, self._len):
            start = i * bs
            self._position = (epoch, i + 1)  # before the yield: this batch is handed out
            yield xs[start : start + bs], ys[start : start + bs]

    def __repr__(self) -> str:
        return (
            f"TensorBatches(num_samples={self._n}, batch_size={self.batch_size}, "
            f"shuffle={self.shuffle}, drop_last={self.drop_last}, seed={self.seed}, "
            f"device={self.device})"
        )
