"""Where a command's output goes, and how an error ends it.

Every command has ``--json``. Without it, messages, tables and progress bars go
to stdout (a terminal's); with it, stdout gets exactly one JSON document (the
result, or ``{"error": ...}`` when the command failed) and everything else goes
to stderr, so ``clr-sweep ... --json | jq`` always parses. :func:`handled` turns
the client's exceptions into a readable line (the problem's detail and the
fields it names: never a traceback) and the exit code of :class:`ExitCode`.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from rich.console import Console

from cli.exit_codes import ExitCode

__all__ = ["CommandError", "Output", "as_doc", "handled", "json_safe", "markup_safe"]


def as_doc(value: Any) -> Any:
    """A pydantic model (the client's reads) as plain JSON data; data as it is."""
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    return value


def markup_safe(value: Any) -> Any:
    """``value`` (a job, bounds: the service's data) with every text escaped for rich, so
    a ``[`` in a name or an error (``"[/]"``, ``"[link=...]"``) prints as it is instead
    of being read as markup (or failing as bad markup). Escape once, right before drawing."""
    from rich.markup import escape

    if isinstance(value, str):
        return escape(value)
    if isinstance(value, dict):
        return {k: markup_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [markup_safe(v) for v in value]
    return value


def json_safe(value: Any) -> Any:
    """``value`` as strict JSON data: NaN and infinities become null (``jq`` and every
    strict parser refuse them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


class CommandError(Exception):
    """A command stops with ``code``, a readable ``message`` and, for ``--json``, ``doc``."""

    def __init__(self, code: ExitCode, message: str, **doc: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.doc = doc


class Output:
    """One command's output: human (stdout) or ``--json`` (one document on stdout)."""

    def __init__(self, json_mode: bool = False) -> None:
        self.json = json_mode
        # messages and progress: stdout for a person, stderr when stdout is the JSON
        self.console = Console(stderr=json_mode, highlight=False)
        self.errors = Console(stderr=True, highlight=False)
        self._emitted = False

    def print(self, *objects: Any, **kwargs: Any) -> None:
        """A message for the person at the terminal."""
        self.console.print(*objects, **kwargs)

    def warn(self, text: str) -> None:
        self.console.print(f"[yellow]warning:[/] {text}")

    def emit(self, doc: Any) -> None:
        """The command's result: printed as JSON with ``--json`` (once), else nothing."""
        if not self.json or self._emitted:
            return
        self._emitted = True
        text = json.dumps(json_safe(as_doc(doc)), indent=2, allow_nan=False)
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    def fail(self, error: CommandError) -> NoReturn:
        """Print ``error`` (stderr; and ``{"error": ...}`` on stdout with ``--json``) and exit."""
        self.errors.print(f"[red]error:[/] {markup_safe(error.message)}", soft_wrap=True)
        self.emit(
            {
                "error": {
                    "code": int(error.code),
                    "name": error.code.name.lower(),
                    "message": error.message,
                    **error.doc,
                }
            }
        )
        raise typer.Exit(int(error.code))


def _field_errors(exc: Any) -> list[dict[str, str]]:
    found = []
    for item in getattr(exc, "errors", None) or []:
        doc = as_doc(item)
        if isinstance(doc, dict):
            found.append({"field": str(doc.get("field")), "reason": str(doc.get("reason"))})
        elif hasattr(item, "field"):  # the client's FieldError
            found.append({"field": str(item.field), "reason": str(getattr(item, "reason", ""))})
    return found


def problem_message(exc: Any) -> str:
    """The problem's detail (or title), then the fields it names that it does not say."""
    detail = str(getattr(exc, "detail", None) or getattr(exc, "title", None) or exc)
    named = [f"{e['field']}: {e['reason']}" for e in _field_errors(exc)]
    missing = [n for n in named if n.split(": ", 1)[1] not in detail]
    if missing:
        detail += " (" + "; ".join(missing) + ")"
    return detail


def _problem_code(status: int | None) -> ExitCode:
    if status == 404:
        return ExitCode.NOT_FOUND
    if status in (401, 403):
        return ExitCode.UNAUTHORIZED
    if status == 409:
        return ExitCode.CONFLICT
    if status in (400, 413, 422):
        return ExitCode.INVALID
    if status in (429, 502, 503, 504):
        return ExitCode.BUSY
    return ExitCode.ERROR


def to_command_error(exc: BaseException) -> CommandError | None:
    """The :class:`CommandError` of a client exception (None: not one of the client's)."""
    import clr_sweep

    if isinstance(exc, (clr_sweep.ConnectError, clr_sweep.Timeout)):
        url = getattr(exc, "url", None)
        message = str(exc)
        if url and str(url) not in message:
            message += f" ({url})"
        if "clr-sweep serve" not in message:
            message += "; start one with `clr-sweep serve`, or run the command with --embedded"
        message += " (another service: --url and --token, or `clr-sweep login URL`)"
        return CommandError(ExitCode.UNREACHABLE, message, url=None if url is None else str(url))
    if isinstance(exc, clr_sweep.ProblemError):
        status = getattr(exc, "status", None)
        code = _problem_code(status)
        message = problem_message(exc)
        if code is ExitCode.UNAUTHORIZED:
            message += " (pass --token, set CLR_TOKEN or run `clr-sweep login URL --token ...`)"
        return CommandError(
            code,
            message,
            status=status,
            title=getattr(exc, "title", None),
            detail=getattr(exc, "detail", None),
            type=getattr(exc, "type", None),
            instance=getattr(exc, "instance", None),
            errors=_field_errors(exc),
        )
    from clr_sweep.config import ConfigError

    if isinstance(exc, ConfigError):  # the service's URL, or the config file: a bad setting
        return CommandError(ExitCode.INVALID, str(exc))
    if isinstance(exc, clr_sweep.ClientError):
        return CommandError(ExitCode.ERROR, str(exc))
    return None


@contextmanager
def handled(out: Output) -> Iterator[None]:
    """Run a command's body: every error it raises ends it readably with its exit code."""
    try:
        yield
    except CommandError as exc:
        out.fail(exc)
    except typer.BadParameter as exc:
        hint = exc.param_hint if isinstance(exc.param_hint, str) else None
        where = f"{hint}: " if hint else ""
        errors = [{"field": hint, "reason": exc.message}] if hint else []
        out.fail(CommandError(ExitCode.INVALID, f"{where}{exc.message}", errors=errors))
    except (typer.Exit, typer.Abort):
        raise
    except KeyboardInterrupt:  # outside a job's follow (which handles its own): nothing to undo
        out.fail(CommandError(ExitCode.INTERRUPTED, "interrupted"))
    except Exception as exc:
        error = to_command_error(exc)
        if error is None:
            raise
        out.fail(error)
