"""Batches as loaders give them: split into (inputs, targets) and moved to a device.

Shared by :mod:`clr.range_test` and :mod:`clr.train`; torch only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["split_batch", "to_device"]


def split_batch(batch: Any, error: type[Exception] = ValueError) -> tuple[Any, Any]:
    """``(inputs, targets)`` of a pair, a 2-sequence or a mapping with
    ``inputs``/``targets`` (``input``/``target``, ``x``/``y``) keys.

    Raises:
        error: the batch is none of those (a ``batch_fn=`` must say how to split it).
    """
    if type(batch) is tuple and len(batch) == 2:  # the common case, without ABC checks
        return batch[0], batch[1]
    if isinstance(batch, Mapping):
        for inputs_key, targets_key in (("inputs", "targets"), ("input", "target"), ("x", "y")):
            if inputs_key in batch and targets_key in batch:
                return batch[inputs_key], batch[targets_key]
    if isinstance(batch, Sequence) and len(batch) == 2:
        return batch[0], batch[1]
    raise error(
        "cannot split a batch into (inputs, targets): pass batch_fn= to say how, "
        f"got {type(batch).__name__}"
    )


def to_device(value: Any, device: torch.device) -> Any:
    """``value`` with every tensor in it on ``device`` (nested tuples, lists, mappings)."""
    if isinstance(value, Tensor):
        return value if value.device == device else value.to(device, non_blocking=True)
    if isinstance(value, tuple | list):
        return type(value)(to_device(v, device) for v in value)
    if isinstance(value, Mapping):
        return {k: to_device(v, device) for k, v in value.items()}
    return value
