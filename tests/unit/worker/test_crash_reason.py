"""What a crashed or killed job says: the exception and where, or how the process died."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from celery.exceptions import WorkerLostError

from worker.prefilter import lost_worker_note
from worker.tasks import crash_reason


def _raise_in_builder() -> None:
    raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")


def _caught(fn: Callable[[], None]) -> BaseException:
    try:
        fn()
    except Exception as exc:
        return exc
    raise AssertionError("did not raise")


class TestCrashReason:
    def test_names_the_type_the_message_and_the_innermost_frames(self) -> None:
        reason = crash_reason(_caught(_raise_in_builder))

        assert reason.startswith(
            "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB (raised at "
        )
        # innermost first, paths relative to the import root
        assert "tests/unit/worker/test_crash_reason.py:" in reason
        assert reason.index("in _raise_in_builder") < reason.index("in _caught")
        assert "/work/" not in reason

    def test_hides_url_passwords_and_api_tokens(self) -> None:
        exc = ValueError(
            "cannot reach postgresql+psycopg://bob:s3cret@db:5432/clr with clr_AbC123xyz987_-q"
        )

        reason = crash_reason(exc)

        assert "s3cret" not in reason
        assert "AbC123xyz987" not in reason
        assert "postgresql+psycopg://bob:***@db:5432/clr" in reason
        assert "clr_***" in reason

    def test_a_long_message_is_cut(self) -> None:
        reason = crash_reason(MemoryError("x" * 5000))

        assert reason.startswith("MemoryError: xxx")
        assert len(reason) < 1100
        assert reason.endswith("…")

    def test_an_exception_without_message_or_traceback_is_its_type(self) -> None:
        assert crash_reason(MemoryError()) == "MemoryError"


class TestLostWorkerNote:
    @pytest.mark.parametrize(
        ("billiard", "note"),
        [
            (
                "Worker exited prematurely: signal 9 (SIGKILL) Job: 0.",
                "the worker process h:7 was killed by signal 9 (SIGKILL: out of memory?)",
            ),
            (
                "Worker exited prematurely: signal 11 (SIGSEGV) Job: 3.",
                "the worker process h:7 was killed by signal 11 (SIGSEGV)",
            ),
            (
                "Worker exited prematurely: exitcode 70.",
                "the worker process h:7 exited with code 70 during the job",
            ),
            ("something else", "the worker process h:7 died during the job: something else"),
        ],
    )
    def test_says_how_the_process_ended(self, billiard: str, note: str) -> None:
        assert lost_worker_note("h:7", WorkerLostError(billiard)) == note
