"""clr: Cyclical Learning Rates and the LR range test, as a plain PyTorch library.

Leslie N. Smith, "Cyclical Learning Rates for Training Neural Networks",
https://arxiv.org/abs/1506.01186. Imports torch, numpy and matplotlib only
(matplotlib lazily, inside the plotting functions); the built-in workloads
import their dataset packages (scikit-learn's digits, mnist1d) lazily, when one
is built. Never the web, a database or a task queue (an import-linter contract
enforces it). Progress leaves through callbacks.

Example:
    >>> import torch
    >>> from clr import CyclicLR, RangeTest, suggest_all
    >>> from clr.workloads import build_workload
    >>> w = build_workload("digits_mlp", seed=0)
    >>> opt = torch.optim.SGD(w.model.parameters(), lr=1e-3, momentum=0.9)
    >>> result = RangeTest(w.model, opt, w.loss_fn).run(w.train_loader, num_iter=100)
"""

from clr._result import RangeTestResult, StopReason
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
    WorkloadError,
)
from clr.optim import OPTIMIZERS, OptimizerError, make_optimizer
from clr.plots import plot_range_test, plot_schedule, render
from clr.range_test import RangeTest, RangeTestProgress, range_test, sweep_lrs
from clr.schedules import (
    POLICIES,
    SCALE_FNS,
    SHAPES,
    ConstantSchedule,
    CosineWarmRestartsSchedule,
    CyclicLR,
    CyclicSchedule,
    ExponentialDecaySchedule,
    OneCycleSchedule,
    Schedule,
    ScheduledLR,
    StepDecaySchedule,
    create_scheduler,
    cycle_at,
    cycle_end,
    cycle_length,
    make_schedule,
    recommend_step_size,
    register_scale_fn,
    total_iterations,
)
from clr.suggest import (
    DEFAULT_METHOD,
    METHODS,
    Curve,
    Suggestion,
    Suggestions,
    smooth_losses,
    suggest,
    suggest_all,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_METHOD",
    "METHODS",
    "OPTIMIZERS",
    "POLICIES",
    "SCALE_FNS",
    "SHAPES",
    "CLRError",
    "ConstantSchedule",
    "CosineWarmRestartsSchedule",
    "Curve",
    "CurveTooShort",
    "CyclicLR",
    "CyclicSchedule",
    "ExponentialDecaySchedule",
    "FlatCurve",
    "InvalidWorkloadParams",
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
    "StepDecaySchedule",
    "StopReason",
    "Suggestion",
    "SuggestionError",
    "Suggestions",
    "UnknownWorkload",
    "WorkloadError",
    "__version__",
    "create_scheduler",
    "cycle_at",
    "cycle_end",
    "cycle_length",
    "make_optimizer",
    "make_schedule",
    "plot_range_test",
    "plot_schedule",
    "range_test",
    "recommend_step_size",
    "register_scale_fn",
    "render",
    "smooth_losses",
    "suggest",
    "suggest_all",
    "sweep_lrs",
    "total_iterations",
]
