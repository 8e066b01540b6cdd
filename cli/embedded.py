"""A one-shot embedded service for one command (``--embedded``), and stopping on signals.

``start_embedded`` starts ``clr-sweep serve`` (API + worker + reaper on a SQLite
file, no servers) on a free local port for one command and stops it afterwards.
``interrupt_on_signals`` turns Ctrl-C, SIGTERM and SIGHUP into :class:`Interrupted`,
so that a command stopped by a service manager or a closed terminal cancels the job
it submitted instead of leaving it running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import httpx

from cli.output import Output

__all__ = ["EmbeddedService", "Interrupted", "interrupt_on_signals", "start_embedded"]

READY_POLL_S = 0.05
READY_TIMEOUT_S = 120.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(BaseException):
    """A signal asked the command to stop (a ``BaseException``, like Ctrl-C's)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """The shell's code for death by this signal: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + self.signum


@contextmanager
def interrupt_on_signals() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP raise :class:`Interrupted` in the main thread."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@dataclass
class EmbeddedService:
    """A ``clr-sweep serve`` process started for one command."""

    process: subprocess.Popen[bytes]
    url: str
    token: str
    log_path: Path

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


class EmbeddedFailed(RuntimeError):
    """The embedded service did not start (its log's tail is in the message)."""


@contextmanager
def start_embedded(data_dir: Path, out: Output) -> Iterator[EmbeddedService]:
    """Start ``clr-sweep serve`` on a free local port; stop it on the way out.

    The service runs in a session of its own, so a Ctrl-C at the terminal reaches
    only this command, which cancels its job before it stops the service; and it
    gets SIGTERM if this command dies without a word (SIGKILL), so it never
    outlives the command that started it.
    """
    from cli.service import TOKEN_FILE, die_with_parent, free_port, make_private

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    make_private(data_dir)
    log_path = data_dir / "logs" / "serve.log"
    log_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    out.print(f"starting the embedded service on {url} (data in {data_dir}, log {log_path})")
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with open(log_fd, "ab") as log:
        process = subprocess.Popen(
            # --stop-grace 0: it is stopped once its one job is over (cancelled ones
            # included), and a warm Celery shutdown costs seconds
            [sys.executable, "-m", "cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
            + ["--stop-grace", "0"],
            env={**os.environ, "CLR_DATA_DIR": str(data_dir)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGTERM),
        )
    service = EmbeddedService(process, url, "", log_path)
    try:
        with out.console.status("starting the service: API and worker…"):
            deadline = time.monotonic() + READY_TIMEOUT_S
            with httpx.Client(timeout=2) as probe:
                while True:
                    if process.poll() is not None:
                        raise EmbeddedFailed(
                            f"the embedded service exited with {process.returncode}:\n"
                            f"{service.log_tail()}"
                        )
                    try:
                        if probe.get(f"{url}/readyz").is_success:
                            break
                    except httpx.TransportError:
                        pass
                    if time.monotonic() > deadline:
                        raise EmbeddedFailed(
                            f"the embedded service was not ready in {READY_TIMEOUT_S:g} s "
                            f"(log: {log_path})"
                        )
                    time.sleep(READY_POLL_S)
        service.token = (data_dir / TOKEN_FILE).read_text().strip()
        yield service
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
