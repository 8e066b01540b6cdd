"""clr: Cyclical Learning Rates and the LR range test, as a plain PyTorch library.

Leslie N. Smith, "Cyclical Learning Rates for Training Neural Networks",
https://arxiv.org/abs/1506.01186. Imports torch, numpy and matplotlib only,
each when first needed: ``import clr`` loads the exceptions, and each other name
its module on first use, so a process that validates specs, reads workload
parameters and draws stored curves (the service's API) never loads torch;
matplotlib is imported inside the plotting functions, and the built-in workloads
import torch and their dataset packages (scikit-learn's digits, mnist1d) when one
is built. Never the web, a database or a task queue (an import-linter contract
enforces it). Progress leaves through callbacks.

Example:
    >>> import torch
    >>> from clr import CyclicLR, RangeTest, suggest_all
    >>> from clr.workloads import build_workload
    >>> w = build_workload("digits_mlp", seed=0)
    >>> opt = torch.optim.SGD(w.model.parameters(), lr=1e-3, momentum=0.9)
    >>> result = RangeTest(w.model, opt, w.loss_fn).run(w.train_loader, num_iter=100)

Training with the bounds a range test suggests is :class:`Trainer` (:mod:`clr.train`);
the schedule math alone, without torch, is :mod:`clr.policies`; proving bounds by
short training runs, when a curve shows too little, is :mod:`clr.verify`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from clr.exceptions import (
    CLRError,
    CurveTooShort,
    FlatCurve,
    InvalidWorkloadParams,
    MonotoneCurve,
    NonFiniteCurve,
    RangeTestError,
    ScheduleError,
    SuggestionError,
    UnknownWorkload,
    VerificationError,
    WorkloadError,
)

if TYPE_CHECKING:
    from clr._result import RangeTestResult, StopReason
    from clr.fused import (
        FusedAdam,
        FusedAdamW,
        FusedModel,
        FusedOptimizer,
        FusedRangeTest,
        FusedSGD,
        MemberMemory,
        fusable,
        fused_capacity,
        make_fused_optimizer,
        member_memory,
        stack_models,
    )
    from clr.fused_train import FusedTrainer, FusedTrainResult, FusedTrainStopReason
    from clr.optim import OPTIMIZERS, OptimizerError, make_optimizer
    from clr.plots import (
        plot_range_test,
        plot_schedule,
        plot_seed_band,
        plot_sweep,
        plot_training,
        render,
    )
    from clr.policies import (
        CYCLIC_POLICIES,
        POLICIES,
        SCALE_FNS,
        SHAPES,
        ConstantSchedule,
        CosineWarmRestartsSchedule,
        CyclicSchedule,
        ExponentialDecaySchedule,
        OneCycleSchedule,
        Schedule,
        StepDecaySchedule,
        cycle_at,
        cycle_end,
        cycle_ends,
        cycle_length,
        make_schedule,
        recommend_step_size,
        register_scale_fn,
        schedule_length,
        total_iterations,
    )
    from clr.range_test import RangeTest, RangeTestProgress, range_test, sweep_lrs
    from clr.schedules import CyclicLR, ScheduledLR, create_scheduler
    from clr.seed_band import BandStats, MethodSpread, SeedBand, SeedSuggestions
    from clr.suggest import (
        DEFAULT_METHOD,
        METHODS,
        SEED_SPREAD_FREE,
        Curve,
        CurveVerdict,
        Suggestion,
        Suggestions,
        curve_verdict,
        seed_agreement,
        smooth_losses,
        suggest,
        suggest_all,
    )
    from clr.train import (
        Checkpoint,
        EnsembleMetrics,
        EpochRecord,
        Trainer,
        TrainProgress,
        TrainResult,
    )
    from clr.verify import (
        Candidate,
        CandidateResult,
        HalvingPlan,
        Verification,
        VerificationRound,
        candidates_for,
        plan_halving,
        select_survivors,
        verify_bounds,
    )

# The names below are imported on first use (PEP 562), so ``import clr`` and
# ``from clr.exceptions import ...`` stay free of torch: a process that only
# validates specs and reads stored results (the API) never loads it.
_LAZY: dict[str, str] = {
    "RangeTestResult": "clr._result",
    "StopReason": "clr._result",
    "FusedAdam": "clr.fused",
    "FusedAdamW": "clr.fused",
    "FusedModel": "clr.fused",
    "FusedOptimizer": "clr.fused",
    "FusedRangeTest": "clr.fused",
    "FusedSGD": "clr.fused",
    "MemberMemory": "clr.fused",
    "fusable": "clr.fused",
    "fused_capacity": "clr.fused",
    "make_fused_optimizer": "clr.fused",
    "member_memory": "clr.fused",
    "stack_models": "clr.fused",
    "FusedTrainer": "clr.fused_train",
    "FusedTrainResult": "clr.fused_train",
    "FusedTrainStopReason": "clr.fused_train",
    "OPTIMIZERS": "clr.optim",
    "OptimizerError": "clr.optim",
    "make_optimizer": "clr.optim",
    "plot_range_test": "clr.plots",
    "plot_schedule": "clr.plots",
    "plot_seed_band": "clr.plots",
    "plot_sweep": "clr.plots",
    "plot_training": "clr.plots",
    "render": "clr.plots",
    "RangeTest": "clr.range_test",
    "RangeTestProgress": "clr.range_test",
    "range_test": "clr.range_test",
    "sweep_lrs": "clr.range_test",
    "CYCLIC_POLICIES": "clr.policies",
    "POLICIES": "clr.policies",
    "SCALE_FNS": "clr.policies",
    "SHAPES": "clr.policies",
    "ConstantSchedule": "clr.policies",
    "CosineWarmRestartsSchedule": "clr.policies",
    "CyclicSchedule": "clr.policies",
    "ExponentialDecaySchedule": "clr.policies",
    "OneCycleSchedule": "clr.policies",
    "Schedule": "clr.policies",
    "StepDecaySchedule": "clr.policies",
    "cycle_at": "clr.policies",
    "cycle_end": "clr.policies",
    "cycle_ends": "clr.policies",
    "cycle_length": "clr.policies",
    "make_schedule": "clr.policies",
    "recommend_step_size": "clr.policies",
    "register_scale_fn": "clr.policies",
    "schedule_length": "clr.policies",
    "total_iterations": "clr.policies",
    "CyclicLR": "clr.schedules",
    "ScheduledLR": "clr.schedules",
    "create_scheduler": "clr.schedules",
    "BandStats": "clr.seed_band",
    "MethodSpread": "clr.seed_band",
    "SeedBand": "clr.seed_band",
    "SeedSuggestions": "clr.seed_band",
    "DEFAULT_METHOD": "clr.suggest",
    "SEED_SPREAD_FREE": "clr.suggest",
    "seed_agreement": "clr.suggest",
    "METHODS": "clr.suggest",
    "Curve": "clr.suggest",
    "CurveVerdict": "clr.suggest",
    "curve_verdict": "clr.suggest",
    "Suggestion": "clr.suggest",
    "Suggestions": "clr.suggest",
    "smooth_losses": "clr.suggest",
    "suggest": "clr.suggest",
    "suggest_all": "clr.suggest",
    "Checkpoint": "clr.train",
    "EnsembleMetrics": "clr.train",
    "EpochRecord": "clr.train",
    "TrainProgress": "clr.train",
    "TrainResult": "clr.train",
    "Trainer": "clr.train",
    "Candidate": "clr.verify",
    "CandidateResult": "clr.verify",
    "HalvingPlan": "clr.verify",
    "Verification": "clr.verify",
    "VerificationRound": "clr.verify",
    "candidates_for": "clr.verify",
    "plan_halving": "clr.verify",
    "select_survivors": "clr.verify",
    "verify_bounds": "clr.verify",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__version__ = "0.1.0"

__all__ = [
    "CYCLIC_POLICIES",
    "DEFAULT_METHOD",
    "METHODS",
    "OPTIMIZERS",
    "POLICIES",
    "SCALE_FNS",
    "SEED_SPREAD_FREE",
    "SHAPES",
    "BandStats",
    "CLRError",
    "Candidate",
    "CandidateResult",
    "Checkpoint",
    "ConstantSchedule",
    "CosineWarmRestartsSchedule",
    "Curve",
    "CurveTooShort",
    "CurveVerdict",
    "CyclicLR",
    "CyclicSchedule",
    "EnsembleMetrics",
    "EpochRecord",
    "ExponentialDecaySchedule",
    "FlatCurve",
    "FusedAdam",
    "FusedAdamW",
    "FusedModel",
    "FusedOptimizer",
    "FusedRangeTest",
    "FusedSGD",
    "FusedTrainResult",
    "FusedTrainStopReason",
    "FusedTrainer",
    "HalvingPlan",
    "InvalidWorkloadParams",
    "MemberMemory",
    "MethodSpread",
    "MonotoneCurve",
    "NonFiniteCurve",
    "OneCycleSchedule",
    "OptimizerError",
    "RangeTest",
    "RangeTestError",
    "RangeTestProgress",
    "RangeTestResult",
    "Schedule",
    "ScheduleError",
    "ScheduledLR",
    "SeedBand",
    "SeedSuggestions",
    "StepDecaySchedule",
    "StopReason",
    "Suggestion",
    "SuggestionError",
    "Suggestions",
    "TrainProgress",
    "TrainResult",
    "Trainer",
    "UnknownWorkload",
    "Verification",
    "VerificationError",
    "VerificationRound",
    "WorkloadError",
    "__version__",
    "candidates_for",
    "create_scheduler",
    "curve_verdict",
    "cycle_at",
    "cycle_end",
    "cycle_ends",
    "cycle_length",
    "fusable",
    "fused_capacity",
    "make_fused_optimizer",
    "make_optimizer",
    "make_schedule",
    "member_memory",
    "plan_halving",
    "plot_range_test",
    "plot_schedule",
    "plot_seed_band",
    "plot_sweep",
    "plot_training",
    "range_test",
    "recommend_step_size",
    "register_scale_fn",
    "render",
    "schedule_length",
    "seed_agreement",
    "select_survivors",
    "smooth_losses",
    "stack_models",
    "suggest",
    "suggest_all",
    "sweep_lrs",
    "total_iterations",
    "verify_bounds",
]
