"""Two workloads of the bench's own, as a team would add theirs (issue 12).

Importing this module registers them in the process's workload registry through
:func:`clr.workloads.register_workload`, next to the built-ins; they are not part
of the service's built-in set. Their data are generated in-process from a fixed
seed (no downloads); the build seed drives only the initial weights and the
order of the training batches, as for the built-ins.

* ``gru_recall`` (trained with SGD): a GRU reads a sequence of random symbols,
  one-hot coded, and must answer the *first* one, so it has to carry it through
  every later step. Its loss sits on a plateau at ``log(symbols)`` until the
  gates learn to hold the first symbol, and a 100- or 300-step range test spends
  too few steps at each LR to get off it: the curve is flat up to the LRs where it
  blows up (the issue's recurrent case). Yet a fixed LR of 0.1 to 1 with momentum
  0.9 learns it to 100 % validation accuracy in 512 steps (seeds 0 and 1; 0.01
  and 0.03 stay at chance, 3 gives chance and 52 %).
* ``attention_majority`` (trained with AdamW): one transformer encoder layer over
  embedded symbols, mean-pooled, must name the commonest symbol of the sequence.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from clr.workloads import ParamSpec, Workload, WorkloadInstance, register_workload

if TYPE_CHECKING:
    import torch

GRU_RECALL = "gru_recall"
ATTENTION_MAJORITY = "attention_majority"

_DATA_SEED = 20251129
_MIN_VAL_BATCH = 512


def _loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    import torch.nn.functional as F

    return F.cross_entropy(outputs, targets)


def _accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return (outputs.argmax(dim=1) == targets).to(outputs.dtype).mean()


def _instance(
    model: torch.nn.Module,
    data: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    *,
    batch_size: int,
    seed: int,
    device: torch.device,
) -> WorkloadInstance:
    from clr.workloads import TensorBatches

    xt, yt, xv, yv = (t.to(device) for t in data)
    train = TensorBatches(xt, yt, batch_size, shuffle=True, drop_last=True, seed=seed)
    val = TensorBatches(
        xv, yv, max(batch_size, _MIN_VAL_BATCH), shuffle=False, drop_last=False, seed=seed
    )
    return WorkloadInstance(
        model=model.to(device),
        train_loader=train,
        val_loader=val,
        loss_fn=_loss,
        metric_fn=_accuracy,
        metric_name="accuracy",
        iters_per_epoch=len(train),
        num_train=int(xt.shape[0]),
        num_val=int(xv.shape[0]),
    )


def _symbols(n: int, length: int, symbols: int, gen: torch.Generator) -> torch.Tensor:
    import torch

    return torch.randint(0, symbols, (n, length), generator=gen)


# --------------------------------------------------------------------------- GRU recall


def _build_gru_recall(params: dict[str, Any], seed: int, device: torch.device) -> WorkloadInstance:
    import torch
    import torch.nn.functional as F
    from torch import nn

    n, length, symbols = params["n_samples"], params["length"], params["symbols"]
    gen = torch.Generator().manual_seed(_DATA_SEED)
    seqs = _symbols(n + n // 4, length, symbols, gen)
    x = F.one_hot(seqs, symbols).float()
    y = seqs[:, 0].clone()

    class GRUClassifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gru = nn.GRU(symbols, params["hidden"], batch_first=True)
            self.head = nn.Linear(params["hidden"], symbols)

        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            _, last = self.gru(inputs)
            out: torch.Tensor = self.head(last[-1])
            return out

    return _instance(
        GRUClassifier(),
        (x[:n], y[:n], x[n:], y[n:]),
        batch_size=params["batch_size"],
        seed=seed,
        device=device,
    )


GRU_RECALL_WORKLOAD = Workload(
    name=GRU_RECALL,
    description=(
        "A GRU reads random one-hot symbols and must answer the first one (a task "
        "needing memory over the sequence); n_samples train plus n_samples/4 val."
    ),
    params=(
        ParamSpec("n_samples", int, 2048, "training sequences", 64, 100_000),
        ParamSpec("length", int, 8, "symbols per sequence", 2, 1000),
        ParamSpec("symbols", int, 8, "alphabet size, also the number of classes", 2, 100),
        ParamSpec("hidden", int, 32, "GRU hidden units", 1, 1024),
        ParamSpec("batch_size", int, 64, "training samples per optimizer step", 1, 4096),
    ),
    builder=_build_gru_recall,
)


# --------------------------------------------------------------------------- attention


def _build_attention_majority(
    params: dict[str, Any], seed: int, device: torch.device
) -> WorkloadInstance:
    import torch
    import torch.nn.functional as F
    from torch import nn

    n, length, symbols = params["n_samples"], params["length"], params["symbols"]
    width = params["width"]
    gen = torch.Generator().manual_seed(_DATA_SEED)
    seqs = _symbols(n + n // 4, length, symbols, gen)
    y = F.one_hot(seqs, symbols).sum(dim=1).argmax(dim=1)  # ties: the lowest symbol

    class AttentionClassifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(symbols, width)
            self.position = nn.Parameter(torch.zeros(length, width))
            self.layer = nn.TransformerEncoderLayer(
                width, nhead=2, dim_feedforward=2 * width, dropout=0.0, batch_first=True
            )
            self.head = nn.Linear(width, symbols)

        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            hidden = self.layer(self.embed(inputs) + self.position)
            out: torch.Tensor = self.head(hidden.mean(dim=1))
            return out

    return _instance(
        AttentionClassifier(),
        (seqs[:n], y[:n], seqs[n:], y[n:]),
        batch_size=params["batch_size"],
        seed=seed,
        device=device,
    )


def _check_attention(params: dict[str, Any]) -> list[dict[str, str]]:
    if params["width"] % 2:
        return [{"field": "width", "reason": f"must be even (2 heads), got {params['width']}"}]
    return []


ATTENTION_MAJORITY_WORKLOAD = Workload(
    name=ATTENTION_MAJORITY,
    description=(
        "One transformer encoder layer over embedded random symbols, mean-pooled, names "
        "the commonest symbol; n_samples train plus n_samples/4 val."
    ),
    params=(
        ParamSpec("n_samples", int, 1024, "training sequences", 64, 100_000),
        ParamSpec("length", int, 24, "symbols per sequence", 2, 1000),
        ParamSpec("symbols", int, 10, "alphabet size, also the number of classes", 2, 100),
        ParamSpec("width", int, 32, "model width (2 attention heads)", 2, 1024),
        ParamSpec("batch_size", int, 64, "training samples per optimizer step", 1, 4096),
    ),
    builder=_build_attention_majority,
    check=_check_attention,
)

for _workload in (GRU_RECALL_WORKLOAD, ATTENTION_MAJORITY_WORKLOAD):
    register_workload(_workload)
