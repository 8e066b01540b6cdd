"""The process-wide workload registry, with lazy loading of entry-point plug-ins."""

from __future__ import annotations

import importlib.metadata
import logging
import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from clr.exceptions import UnknownWorkload
from clr.workloads._core import Workload, WorkloadInstance

if TYPE_CHECKING:
    import torch

__all__ = [
    "ENTRY_POINT_GROUP",
    "build_workload",
    "get_workload",
    "list_workloads",
    "register_workload",
]

ENTRY_POINT_GROUP = "clr_sweep.workloads"
"""Entry-point group third-party distributions use to add workloads."""

logger = logging.getLogger(__name__)


class EntryPointLike(Protocol):
    """What the loader needs from an :class:`importlib.metadata.EntryPoint`."""

    @property
    def name(self) -> str: ...

    @property
    def value(self) -> str: ...

    def load(self) -> Any: ...


def _workloads_from(obj: Any) -> list[Workload]:
    """Turn what an entry point resolved to into a list of workloads, or raise TypeError."""
    if isinstance(obj, Workload):
        return [obj]
    if callable(obj):
        obj = obj()
        if isinstance(obj, Workload):
            return [obj]
    if isinstance(obj, list | tuple) and all(isinstance(w, Workload) for w in obj):
        return list(obj)
    raise TypeError(
        "expected a Workload, a list of Workloads, or a zero-argument callable returning "
        f"one of those; got {type(obj).__name__}"
    )


class _Registry:
    """Name -> :class:`Workload` map; entry points are read once, on first lookup."""

    def __init__(self) -> None:
        self._workloads: dict[str, Workload] = {}
        self._lock = threading.RLock()
        self._entry_points_loaded = False

    def register(self, workload: Workload) -> Workload:
        if not isinstance(workload, Workload):
            raise TypeError(f"expected a Workload, got {type(workload).__name__}")
        with self._lock:
            if workload.name in self._workloads:
                raise ValueError(f"a workload named {workload.name!r} is already registered")
            self._workloads[workload.name] = workload
        return workload

    def load_entry_points(self, entry_points: Iterable[EntryPointLike] | None = None) -> None:
        """Register the workloads of every entry point, skipping (and logging) broken ones.

        Args:
            entry_points: the entry points to load; by default those of
                :data:`ENTRY_POINT_GROUP` in the installed distributions.
        """
        if entry_points is None:
            try:
                entry_points = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
            except Exception as exc:
                logger.warning("could not list %r entry points: %s", ENTRY_POINT_GROUP, exc)
                return
        for ep in entry_points:
            label = f"{getattr(ep, 'name', '?')!r} ({getattr(ep, 'value', '?')})"
            try:
                found = _workloads_from(ep.load())
            except Exception as exc:
                logger.warning(
                    "skipping workload entry point %s in group %r: %s: %s",
                    label,
                    ENTRY_POINT_GROUP,
                    type(exc).__name__,
                    exc,
                )
                continue
            for workload in found:
                if self._workloads.get(workload.name) is workload:
                    continue  # the plug-in registered itself on import
                try:
                    self.register(workload)
                except ValueError as exc:
                    logger.warning("skipping workload from entry point %s: %s", label, exc)

    def _ensure_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        with self._lock:
            if self._entry_points_loaded:
                return
            self._entry_points_loaded = True
            self.load_entry_points()

    def get(self, name: str) -> Workload:
        self._ensure_entry_points()
        with self._lock:
            workload = self._workloads.get(name)
            if workload is None:
                known = ", ".join(sorted(self._workloads)) or "(none)"
                raise UnknownWorkload(f"unknown workload {name!r}; known workloads: {known}")
            return workload

    def names(self) -> list[str]:
        self._ensure_entry_points()
        with self._lock:
            return sorted(self._workloads)


_REGISTRY = _Registry()


def register_workload(workload: Workload) -> Workload:
    """Add a workload to the process-wide registry.

    Args:
        workload: the workload to add.

    Returns:
        The same workload, so the call can be used inline.

    Raises:
        ValueError: if a workload with the same name is already registered.
        TypeError: if ``workload`` is not a :class:`Workload`.
    """
    return _REGISTRY.register(workload)


def get_workload(name: str) -> Workload:
    """Look up a workload by name (built-in or from an installed entry point).

    Args:
        name: the registered name, e.g. ``"digits_mlp"``.

    Returns:
        The :class:`Workload`.

    Raises:
        UnknownWorkload: if no workload has that name; the message lists the known names.
    """
    return _REGISTRY.get(name)


def list_workloads() -> list[str]:
    """Names of every registered workload, sorted.

    Returns:
        The names, built-ins and entry-point plug-ins alike.
    """
    return _REGISTRY.names()


def build_workload(
    name: str,
    params: Mapping[str, Any] | None = None,
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> WorkloadInstance:
    """Look up a workload and build it: ``get_workload(name).build(params, ...)``.

    Args:
        name: the registered workload name.
        params: parameter values by name; missing ones take their defaults.
        seed: seed of the model initialisation and training data order.
        device: where the model and batches live.

    Returns:
        The built :class:`WorkloadInstance`.

    Raises:
        UnknownWorkload: if no workload has that name.
        InvalidWorkloadParams: if the parameters are not acceptable.
    """
    return get_workload(name).build(params, seed=seed, device=device)
