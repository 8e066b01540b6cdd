"""Cold start: ``clr-sweep range-test submit --embedded`` against ``clr-sweep range-test``.

The README's run path (which then trains with the bounds it found) starts the
embedded service (API, worker, reaper), submits a range test through the API,
follows it, prints the bounds, fetches the plot and stops the service;
``range-test`` runs the same test in-process. Both run the same spec (the
digits MLP, 300 steps, CPU) from cold: a new process and a fresh data folder and
working folder each time, in alternating order, ``--repeats`` times each.
Printed: each command's median wall time, the ratio of the medians (target:
embedded / in-process <= 1.5) and, for the embedded runs, where the time went,
read from the command's own output and the service's logs:

- ``api``: the service answers (the job is queued);
- ``worker``: the Celery worker says it is ready (torch imported, data preloaded);
- ``finished``: the job has succeeded (worker log);
- ``results``: bounds printed and plot written (the command's output);
- ``exit``: the command has stopped the service and exited.

    python -m bench.cold_start [--repeats 3] [--baseline PATH]

``--baseline`` also runs ``range-test submit --embedded`` (``submit --embedded``
before the command line's groups) from another checkout (the "before"
of a change, e.g. ``git archive <commit> | tar -x -C /tmp/base``) in the same
rotation, so before and after are measured under the same machine load.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SPEC = ["--workload", "digits_mlp", "--num-iter", "300", "--device", "cpu", "--plot", "curve.png"]
STAGES = ("api", "worker", "finished", "results", "exit")
_LOG_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): ")


def _log_time(path: Path, text: str) -> float | None:
    """The wall-clock time of the first line of Celery's log at ``path`` holding ``text``."""
    if not path.exists():
        return None
    for line in path.read_text(errors="replace").splitlines():
        match = _LOG_TIME.match(line)
        if match and text in line:
            return datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return None


def run(command: str, folder: Path, repo: Path = REPO_ROOT) -> tuple[float, dict[str, float]]:
    """Run one command from cold in ``folder``; its wall time and (embedded) stage times."""
    folder.mkdir()
    data_dir = folder / ".clr-sweep"
    embedded = command != "in-process"
    # a checkout from before the command groups spells the service's range test `submit`
    submit = ["range-test", "submit"] if (repo / "cli" / "submit.py").exists() else ["submit"]
    argv = [*submit, "--embedded", *SPEC] if embedded else ["range-test", *SPEC]
    env = {**os.environ, "CLR_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}
    for key in ("CLR_DATABASE_URL", "CLR_BROKER_URL", "CLR_TOKEN", "CLR_URL", "CLR_API_URL"):
        env.pop(key, None)
    start_wall, start = time.time(), time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "cli", *argv],
        cwd=folder,
        env={**env, "PYTHONPATH": os.pathsep.join([str(repo), env.get("PYTHONPATH", "")])},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    stages: dict[str, float] = {}
    output = []
    for line in process.stdout:
        output.append(line)
        now = time.perf_counter() - start
        if re.match(r"range test \S+ queued", line):
            stages.setdefault("api", now)
        if "plot written" in line:
            stages.setdefault("results", now)
    code = process.wait()
    elapsed = time.perf_counter() - start
    if code != 0:
        raise RuntimeError(f"{command} exited with {code}:\n{''.join(output)[-3000:]}")
    if embedded:
        logs = data_dir / "logs"
        for stage, text in (("worker", " ready."), ("finished", "job.succeeded")):
            moment = _log_time(logs / "cpu1.log", text)
            if moment is not None:
                stages[stage] = moment - start_wall
        stages["exit"] = elapsed
    return elapsed, stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="another checkout's embedded path too")
    args = parser.parse_args()
    repos = {"in-process": REPO_ROOT, "embedded": REPO_ROOT}
    if args.baseline is not None:
        repos["baseline"] = args.baseline
    times: dict[str, list[float]] = {command: [] for command in repos}
    stages: dict[str, dict[str, list[float]]] = {
        command: {stage: [] for stage in STAGES} for command in repos if command != "in-process"
    }
    with tempfile.TemporaryDirectory(prefix="clr-cold-") as tmp:
        for repeat in range(args.repeats):
            order = list(repos)
            shift = repeat % len(order)  # each command goes first in turn
            for command in order[shift:] + order[:shift]:
                folder = Path(tmp) / f"{command}-{repeat}"
                elapsed, seen = run(command, folder, repos[command])
                times[command].append(elapsed)
                for stage, moment in seen.items():
                    if command in stages and stage in stages[command]:
                        stages[command][stage].append(moment)
                print(f"repeat {repeat + 1}: {command:<10} {elapsed:6.2f} s", flush=True)
    medians = {command: statistics.median(values) for command, values in times.items()}
    print()
    for command, value in medians.items():
        runs = ", ".join(f"{t:.2f}" for t in times[command])
        print(f"{command:<10} median {value:6.2f} s  (runs: {runs})")
    for command in stages:
        ratio = medians[command] / medians["in-process"]
        print(f"{command} / in-process = {ratio:.2f} (target <= 1.5)")
    for command, by_stage in stages.items():
        print(f"{command}, median seconds from the command's start:")
        for stage in STAGES:
            if by_stage[stage]:
                print(f"  {stage:<9} {statistics.median(by_stage[stage]):6.2f}")


if __name__ == "__main__":
    main()
