"""Built-in workloads: small, offline, deterministic classification problems.

Datasets are generated or loaded once per process and cached as read-only NumPy
arrays; each build copies them to the requested device. Their contents and the
train/validation splits are fixed (independent of the build seed); the build seed
only drives the model initialisation and the training data order.
"""

from __future__ import annotations

import functools
import random
import threading
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from clr.workloads._core import ParamSpec, Workload, WorkloadCost, WorkloadInstance
from clr.workloads._registry import register_workload

if TYPE_CHECKING:
    # Imported inside the functions at run time: registering the built-ins (their
    # names and parameters) must not load torch, which only a build needs.
    import torch
    from torch import nn

__all__ = [
    "BUILTIN_WORKLOADS",
    "accuracy",
    "cross_entropy",
]

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
Arrays = tuple[F32, I64, F32, I64]

_DIGITS_SPLIT_SEED = 0
_DIGITS_VAL_FRACTION = 0.2
_SYNTHETIC_DATA_SEED = 1234
_SYNTHETIC_MAX_ELEMENTS = 50_000_000
_MIN_VAL_BATCH = 512

_MNIST1D_LOCK = threading.Lock()


def cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of logits ``outputs`` (N, C) against class indices ``targets`` (N,).

    Args:
        outputs: logits.
        targets: class indices.

    Returns:
        The scalar loss tensor.
    """
    import torch.nn.functional as F

    return F.cross_entropy(outputs, targets)


def accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Fraction of rows whose arg-max logit is the target class.

    Stays on the outputs' device: no ``.item()``, no host synchronisation.

    Args:
        outputs: logits, shape (N, C).
        targets: class indices, shape (N,).

    Returns:
        A 0-dim float tensor in [0, 1].
    """
    return (outputs.argmax(dim=1) == targets).to(outputs.dtype).mean()


def _readonly(*arrays: npt.NDArray[Any]) -> None:
    for arr in arrays:
        arr.setflags(write=False)


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> Arrays:
    """scikit-learn's 8x8 digits, scaled to [0, 1], with a fixed stratified 80/20 split."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (np.asarray(data.data, dtype=np.float64) / 16.0).astype(np.float32)
    y = np.asarray(data.target, dtype=np.int64)
    rng = np.random.default_rng(_DIGITS_SPLIT_SEED)
    val_parts = []
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        val_parts.append(idx[: round(len(idx) * _DIGITS_VAL_FRACTION)])
    is_val = np.zeros(len(y), dtype=bool)
    is_val[np.concatenate(val_parts)] = True
    arrays = (x[~is_val], y[~is_val], x[is_val], y[is_val])
    _readonly(*arrays)
    return arrays


def preload() -> None:
    """Import the built-in workloads' data libraries and load the digits.

    A worker calls this once in its parent process, so each job's fresh child
    process (forked from it) starts with them instead of paying seconds of imports.
    MNIST-1D is generated on first use (it takes seconds per size).
    """
    import mnist1d.data  # noqa: F401 - the import is the point
    import sklearn.datasets  # noqa: F401

    _digits_arrays()


@functools.lru_cache(maxsize=4)
def _mnist1d_arrays(num_samples: int) -> Arrays:
    """MNIST-1D generated offline with the reference arguments (only ``num_samples`` varies).

    ``make_dataset`` reseeds Python's and NumPy's global RNGs; their states are saved and
    restored around it, under a lock so concurrent builds cannot interleave.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = num_samples
    with _MNIST1D_LOCK:
        py_state = random.getstate()
        np_state = np.random.get_state()
        try:
            data = make_dataset(args)
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
    arrays = (
        np.ascontiguousarray(data["x"], dtype=np.float32),
        np.ascontiguousarray(data["y"], dtype=np.int64),
        np.ascontiguousarray(data["x_test"], dtype=np.float32),
        np.ascontiguousarray(data["y_test"], dtype=np.int64),
    )
    _readonly(*arrays)
    return arrays


def _mnist1d_num_train(num_samples: int) -> int:
    # make_dataset draws num_samples // 10 per class and keeps the first 80% for training.
    return int((num_samples // 10) * 10 * 0.8)


def _mlp(in_features: int, width: int, depth: int, num_classes: int) -> nn.Sequential:
    from torch import nn

    layers: list[nn.Module] = [nn.Flatten()]
    features = in_features
    for _ in range(depth):
        layers += [nn.Linear(features, width), nn.ReLU()]
        features = width
    layers.append(nn.Linear(features, num_classes))
    return nn.Sequential(*layers)


def _instance(
    model: nn.Module,
    arrays: Arrays,
    *,
    input_shape: tuple[int, ...],
    params: dict[str, Any],
    seed: int,
    device: torch.device,
    name: str,
) -> WorkloadInstance:
    import torch

    from clr.workloads._batches import TensorBatches

    x_train, y_train, x_val, y_val = arrays
    xt = torch.tensor(x_train, device=device).reshape(len(x_train), *input_shape)
    yt = torch.tensor(y_train, device=device)
    xv = torch.tensor(x_val, device=device).reshape(len(x_val), *input_shape)
    yv = torch.tensor(y_val, device=device)
    batch_size = int(params["batch_size"])
    train = TensorBatches(xt, yt, batch_size, shuffle=True, drop_last=True, seed=seed)
    val = TensorBatches(
        xv, yv, max(batch_size, _MIN_VAL_BATCH), shuffle=False, drop_last=False, seed=seed
    )
    return WorkloadInstance(
        model=model.to(device),
        train_loader=train,
        val_loader=val,
        loss_fn=cross_entropy,
        metric_fn=accuracy,
        metric_name="accuracy",
        iters_per_epoch=len(train),
        num_train=len(x_train),
        num_val=len(x_val),
        params=params,
        name=name,
    )


def _batch_size(default: int, maximum: int) -> ParamSpec:
    return ParamSpec("batch_size", int, default, "training samples per optimizer step", 1, maximum)


def _depth(default: int, maximum: int, what: str) -> ParamSpec:
    return ParamSpec("depth", int, default, what, 1, maximum)


# --------------------------------------------------------------------------- costs
# Arithmetic on the params, next to their ParamSpecs: what each builder below builds.

_F32 = 4
_LABEL = 8  # int64 class indices
_DIGITS_SAMPLES = 1797
_DIGITS_TRAIN = 1438
"""Digits in the training split (the stratified 80 % of :func:`_digits_arrays`)."""
_MNIST1D_LENGTH = 40


def _dataset_bytes(samples: int, features: int) -> int:
    return samples * (features * _F32 + _LABEL)


def _mlp_cost(in_features: int, width: int, depth: int, classes: int) -> WorkloadCost:
    """``_mlp``: depth Linear+ReLU layers of ``width``, then a Linear to ``classes``."""
    multiplies = in_features * width + (depth - 1) * width * width + width * classes
    return WorkloadCost(
        weights=multiplies + depth * width + classes,
        # each Linear keeps its input, each ReLU its output
        activations=in_features + 2 * depth * width + classes,
        flops=2 * multiplies,
    )


def _with_data(cost: WorkloadCost, data_bytes: int, train_samples: int) -> WorkloadCost:
    return WorkloadCost(
        cost.weights, cost.activations, cost.flops, data_bytes, train_samples=train_samples
    )


# Measured against a wide MLP's step on one CPU (bench-style, steps timed in one run):
# 8x8 and length-40 convolutions reach about a tenth and a fifth of its FLOP rate.
_DIGITS_CNN_EFFICIENCY = 0.1
_MNIST1D_CNN_EFFICIENCY = 0.2


def _digits_mlp_cost(params: dict[str, Any]) -> WorkloadCost:
    cost = _mlp_cost(64, params["width"], params["depth"], 10)
    return _with_data(cost, _dataset_bytes(_DIGITS_SAMPLES, 64), _DIGITS_TRAIN)


def _digits_cnn_cost(params: dict[str, Any]) -> WorkloadCost:
    width, depth = params["width"], params["depth"]
    weights = flops = 0
    activations = 64  # the input image
    channels, side = 1, 8
    for _ in range(depth):
        weights += 9 * channels * width + width
        flops += 2 * 9 * channels * width * side * side
        pooled = side // 2
        activations += 2 * width * side * side + width * pooled * pooled  # conv, ReLU, pool
        channels, side = width, pooled
    features = width * side * side
    weights += features * 10 + 10
    flops += 2 * features * 10
    data_bytes = _dataset_bytes(_DIGITS_SAMPLES, 64)
    return WorkloadCost(
        weights, activations + 10, flops, data_bytes, _DIGITS_CNN_EFFICIENCY, _DIGITS_TRAIN
    )


def _mnist1d_data_bytes(params: dict[str, Any]) -> int:
    return _dataset_bytes(params["num_samples"], _MNIST1D_LENGTH)


def _mnist1d_mlp_cost(params: dict[str, Any]) -> WorkloadCost:
    cost = _mlp_cost(_MNIST1D_LENGTH, params["width"], params["depth"], 10)
    return _with_data(cost, _mnist1d_data_bytes(params), _mnist1d_num_train(params["num_samples"]))


def _mnist1d_cnn_cost(params: dict[str, Any]) -> WorkloadCost:
    width, depth = params["width"], params["depth"]
    weights = flops = 0
    activations = length = _MNIST1D_LENGTH
    channels = 1
    for _ in range(depth):
        length = (length - 1) // 2 + 1
        weights += 5 * channels * width + width
        flops += 2 * 5 * channels * width * length
        activations += 2 * width * length  # conv output and ReLU output
        channels = width
    features = width * length
    weights += features * 10 + 10
    flops += 2 * features * 10
    data_bytes = _mnist1d_data_bytes(params)
    return WorkloadCost(
        weights,
        activations + 10,
        flops,
        data_bytes,
        _MNIST1D_CNN_EFFICIENCY,
        _mnist1d_num_train(params["num_samples"]),
    )


def _synthetic_mlp_cost(params: dict[str, Any]) -> WorkloadCost:
    n_features, n_classes = params["n_features"], params["n_classes"]
    cost = _mlp_cost(n_features, params["width"], params["depth"], n_classes)
    samples = params["n_samples"] + max(1, params["n_samples"] // 4)
    return _with_data(cost, _dataset_bytes(samples, n_features), params["n_samples"])


# --------------------------------------------------------------------------- digits


def _build_digits_mlp(params: dict[str, Any], seed: int, device: torch.device) -> WorkloadInstance:
    model = _mlp(64, params["width"], params["depth"], 10)
    return _instance(
        model,
        _digits_arrays(),
        input_shape=(64,),
        params=params,
        seed=seed,
        device=device,
        name="digits_mlp",
    )


def _build_digits_cnn(params: dict[str, Any], seed: int, device: torch.device) -> WorkloadInstance:
    from torch import nn

    width, depth = params["width"], params["depth"]
    layers: list[nn.Module] = []
    channels, side = 1, 8
    for _ in range(depth):
        layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        channels, side = width, side // 2
    layers += [nn.Flatten(), nn.Linear(width * side * side, 10)]
    return _instance(
        nn.Sequential(*layers),
        _digits_arrays(),
        input_shape=(1, 8, 8),
        params=params,
        seed=seed,
        device=device,
        name="digits_cnn",
    )


DIGITS_MLP = Workload(
    name="digits_mlp",
    description=(
        "scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes; fixed "
        "stratified 80/20 split: 1438 train / 359 val), pixels scaled to [0, 1], "
        "classified by a ReLU MLP."
    ),
    params=(
        _batch_size(64, 1024),
        ParamSpec("width", int, 64, "hidden units per layer", 1, 4096),
        _depth(2, 8, "number of hidden Linear+ReLU layers"),
    ),
    builder=_build_digits_mlp,
    cost=_digits_mlp_cost,
)

DIGITS_CNN = Workload(
    name="digits_cnn",
    description=(
        "scikit-learn's bundled 8x8 handwritten digits (same data and split as digits_mlp) "
        "as 1x8x8 images, classified by a small CNN: depth blocks of 3x3 Conv2d+ReLU+2x2 "
        "MaxPool, then a Linear layer."
    ),
    params=(
        _batch_size(64, 1024),
        ParamSpec("width", int, 16, "channels of every convolution", 1, 256),
        _depth(2, 3, "number of Conv2d+ReLU+MaxPool blocks (8x8 halves each time)"),
    ),
    builder=_build_digits_cnn,
    cost=_digits_cnn_cost,
)


# --------------------------------------------------------------------------- MNIST-1D


def _num_samples() -> ParamSpec:
    return ParamSpec(
        "num_samples",
        int,
        5000,
        "MNIST-1D sequences generated (rounded down to a multiple of 10); 80% train, "
        "20% validation",
        100,
        20000,
    )


def _check_mnist1d(params: dict[str, Any]) -> list[dict[str, str]]:
    num_train = _mnist1d_num_train(params["num_samples"])
    if params["batch_size"] > num_train:
        return [
            {
                "field": "batch_size",
                "reason": f"must be <= the number of training samples ({num_train} for "
                f"num_samples={params['num_samples']}), got {params['batch_size']}",
            }
        ]
    return []


def _build_mnist1d_mlp(params: dict[str, Any], seed: int, device: torch.device) -> WorkloadInstance:
    arrays = _mnist1d_arrays(params["num_samples"])
    length = arrays[0].shape[1]
    model = _mlp(length, params["width"], params["depth"], 10)
    return _instance(
        model,
        arrays,
        input_shape=(length,),
        params=params,
        seed=seed,
        device=device,
        name="mnist1d_mlp",
    )


def _build_mnist1d_cnn(params: dict[str, Any], seed: int, device: torch.device) -> WorkloadInstance:
    from torch import nn

    arrays = _mnist1d_arrays(params["num_samples"])
    width, depth = params["width"], params["depth"]
    length = arrays[0].shape[1]
    layers: list[nn.Module] = []
    channels = 1
    for _ in range(depth):
        layers += [nn.Conv1d(channels, width, 5, stride=2, padding=2), nn.ReLU()]
        channels, length = width, (length - 1) // 2 + 1
    layers += [nn.Flatten(), nn.Linear(width * length, 10)]
    return _instance(
        nn.Sequential(*layers),
        arrays,
        input_shape=(1, arrays[0].shape[1]),
        params=params,
        seed=seed,
        device=device,
        name="mnist1d_cnn",
    )


MNIST1D_MLP = Workload(
    name="mnist1d_mlp",
    description=(
        "MNIST-1D (Greydanus 2020) generated offline with the reference arguments: "
        "sequences of length 40, 10 classes, 4000 train / 1000 val at the default "
        "num_samples=5000; classified by a ReLU MLP."
    ),
    params=(
        _batch_size(64, 4096),
        ParamSpec("width", int, 100, "hidden units per layer", 1, 4096),
        _depth(2, 8, "number of hidden Linear+ReLU layers"),
        _num_samples(),
    ),
    builder=_build_mnist1d_mlp,
    check=_check_mnist1d,
    cost=_mnist1d_mlp_cost,
)

MNIST1D_CNN = Workload(
    name="mnist1d_cnn",
    description=(
        "MNIST-1D (same data as mnist1d_mlp) as 1x40 sequences, classified by a 1-D CNN: "
        "depth layers of Conv1d(kernel 5, stride 2)+ReLU, then a Linear layer."
    ),
    params=(
        _batch_size(64, 4096),
        ParamSpec("width", int, 32, "channels of every convolution", 1, 256),
        _depth(3, 5, "number of stride-2 Conv1d+ReLU layers"),
        _num_samples(),
    ),
    builder=_build_mnist1d_cnn,
    check=_check_mnist1d,
    cost=_mnist1d_cnn_cost,
)


# --------------------------------------------------------------------------- synthetic


def _check_synthetic(params: dict[str, Any]) -> list[dict[str, str]]:
    errors: list[dict[str, str]] = []
    if params["batch_size"] > params["n_samples"]:
        errors.append(
            {
                "field": "batch_size",
                "reason": f"must be <= n_samples ({params['n_samples']}), "
                f"got {params['batch_size']}",
            }
        )
    elements = params["n_samples"] * params["n_features"]
    if elements > _SYNTHETIC_MAX_ELEMENTS:
        errors.append(
            {
                "field": "n_samples",
                "reason": f"n_samples * n_features must be <= {_SYNTHETIC_MAX_ELEMENTS}, "
                f"got {elements}",
            }
        )
    return errors


def _synthetic_arrays(
    n_samples: int, n_features: int, n_classes: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    import torch

    gen = torch.Generator(device="cpu")
    gen.manual_seed(_SYNTHETIC_DATA_SEED)
    teacher = torch.randn(n_features, n_classes, generator=gen)
    n_val = max(1, n_samples // 4)
    x = torch.randn(n_samples + n_val, n_features, generator=gen)
    y = (x @ teacher).argmax(dim=1)
    x, y = x.to(device), y.to(device)
    return x[:n_samples], y[:n_samples], x[n_samples:], y[n_samples:]


def _build_synthetic_mlp(
    params: dict[str, Any], seed: int, device: torch.device
) -> WorkloadInstance:
    from clr.workloads._batches import TensorBatches

    n_features, n_classes = params["n_features"], params["n_classes"]
    model = _mlp(n_features, params["width"], params["depth"], n_classes).to(device)
    xt, yt, xv, yv = _synthetic_arrays(params["n_samples"], n_features, n_classes, device)
    batch_size = int(params["batch_size"])
    train = TensorBatches(xt, yt, batch_size, shuffle=True, drop_last=True, seed=seed)
    val = TensorBatches(
        xv, yv, max(batch_size, _MIN_VAL_BATCH), shuffle=False, drop_last=False, seed=seed
    )
    return WorkloadInstance(
        model=model,
        train_loader=train,
        val_loader=val,
        loss_fn=cross_entropy,
        metric_fn=accuracy,
        metric_name="accuracy",
        iters_per_epoch=len(train),
        num_train=int(xt.shape[0]),
        num_val=int(xv.shape[0]),
        params=params,
        name="synthetic_mlp",
    )


SYNTHETIC_MLP = Workload(
    name="synthetic_mlp",
    description=(
        "For speed tests only, not for judging learning rates: Gaussian inputs labelled by "
        "a fixed random linear teacher (argmax of x @ W), n_samples train plus n_samples/4 "
        "val, generated from a fixed seed and classified by a ReLU MLP."
    ),
    params=(
        ParamSpec("n_samples", int, 4096, "training samples", 16, 1_000_000),
        ParamSpec("n_features", int, 32, "input dimension", 1, 65536),
        ParamSpec("n_classes", int, 10, "number of classes", 2, 1000),
        ParamSpec("width", int, 128, "hidden units per layer", 1, 8192),
        _depth(2, 8, "number of hidden Linear+ReLU layers"),
        _batch_size(64, 65536),
    ),
    builder=_build_synthetic_mlp,
    check=_check_synthetic,
    cost=_synthetic_mlp_cost,
)

BUILTIN_WORKLOADS: tuple[Workload, ...] = (
    DIGITS_MLP,
    DIGITS_CNN,
    MNIST1D_MLP,
    MNIST1D_CNN,
    SYNTHETIC_MLP,
)
"""Every built-in workload, registered when :mod:`clr.workloads` is imported."""

for _workload in BUILTIN_WORKLOADS:
    register_workload(_workload)
