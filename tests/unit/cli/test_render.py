"""How the command line shows jobs: a queued job's wait, verification rounds, the code to
use the bounds."""

from __future__ import annotations

import io

from rich.console import Console

from cli.output import Output, json_safe, problem_message
from cli.render import counts_text, cyclic_lr_code, print_verification, status_text


def captured(width: int = 200) -> Output:
    out = Output()
    out.console = Console(file=io.StringIO(), width=width)
    return out


def text(out: Output) -> str:
    return out.console.file.getvalue()  # type: ignore[attr-defined,no-any-return]


def test_a_queued_job_shows_its_place_and_what_it_waits_for_when_the_api_says() -> None:
    job = {"status": "queued"}
    assert status_text(job) == "queued"
    job |= {"waiting_reason": "no running worker takes jobs.cuda", "queue_position": 2}
    assert status_text(job) == "queued (#2): no running worker takes jobs.cuda"
    assert status_text({"status": "running", "waiting_reason": None}) == "running"


def test_counts_by_status_in_a_fixed_order_without_zeros() -> None:
    assert counts_text({"queued": 4, "succeeded": 3, "running": 0}) == "3 succeeded, 4 queued"
    assert counts_text({}) == "no children yet"


def test_the_code_to_use_the_bounds() -> None:
    bounds = {"base_lr": 0.025812, "max_lr": 0.10326, "step_size": 88, "stop_iteration": 704,
              "cycles": 4}  # fmt: skip
    assert cyclic_lr_code(bounds).splitlines() == [
        "from clr import CyclicLR",
        "sched = CyclicLR(opt, base_lr=0.02581, max_lr=0.1033, step_size_up=88, "
        'mode="triangular2")',
        "# sched.step() after every batch; stop after iteration 704 (the end of cycle 4)",
    ]
    unknown = cyclic_lr_code(bounds | {"step_size": None, "stop_iteration": None})
    assert "step_size_up: 2 to 8 epochs" in unknown
    assert "stop after" not in unknown


def test_a_verification_prints_each_rounds_candidates_and_what_was_spent() -> None:
    doc = {
        "status": "succeeded",
        "full_run_iterations": 200,
        "budget_runs": 1.0,
        "spent_iterations": 200,
        "candidates": [
            {"source": "max_fraction", "max_lr": 0.377, "val_loss": [0.67]},
            {"source": "neighbour:x3", "max_lr": 1.13, "val_loss": [None]},
            {"source": "neighbour:/3", "max_lr": 0.126, "val_loss": [0.15, 0.11]},
        ],
        "rounds": [
            {"round": 0, "iterations": 40, "candidates": [0, 1, 2]},
            {"round": 1, "iterations": 80, "candidates": [2]},
        ],
    }
    out = captured()
    print_verification(doc, out)
    lines = text(out).splitlines()
    assert lines[0] == (
        "verification succeeded: 3 candidate pairs, 2 round(s), 1.00 of 1.0 full runs spent"
    )
    assert lines[1] == (
        "  round 0 (40 iterations each): max_fraction 0.377: 0.67; neighbour:x3 1.13: failed; "
        "neighbour:/3 0.126: 0.15"
    )
    assert lines[2] == "  round 1 (80 iterations each): neighbour:/3 0.126: 0.11"


class Problem(Exception):
    def __init__(self, detail: str, errors: list[dict[str, str]]) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors


def test_a_problem_names_the_fields_its_detail_does_not() -> None:
    said = Problem("end_lr: start_lr must be below end_lr", [
        {"field": "end_lr", "reason": "start_lr must be below end_lr"}])  # fmt: skip
    assert problem_message(said) == "end_lr: start_lr must be below end_lr"
    unsaid = Problem("Invalid input", [{"field": "params.width", "reason": "must be >= 1"}])
    assert problem_message(unsaid) == "Invalid input (params.width: must be >= 1)"


def test_json_has_no_nan() -> None:
    assert json_safe({"a": [float("nan"), 1.0], "b": float("inf")}) == {"a": [None, 1.0], "b": None}
