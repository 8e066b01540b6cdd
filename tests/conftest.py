"""Shared test setup: small, deterministic and single-threaded torch."""

from __future__ import annotations

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import torch  # noqa: E402 - the backend must be chosen before anything imports matplotlib

# Two xdist workers share two cores: one torch thread each avoids oversubscription.
torch.set_num_threads(1)
