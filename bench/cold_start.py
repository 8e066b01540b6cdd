"""Cold start: ``clr-sweep submit --embedded`` against ``clr-sweep range-test``.

The README's run path starts the embedded service (API, worker, reaper), submits a
range test through the API, follows it, prints the bounds, fetches the plot and
stops the service; ``range-test`` runs the same test in-process. Both run the
same spec (the digits MLP, 300 steps, CPU) from cold: a new process and a fresh
data folder and working folder each time, in alternating order, ``--repeats``
times each. Printed: each command's median wall time, the ratio of the medians
(target: embedded / in-process <= 1.5) and, for the embedded runs, where the
time went, read from the command's own output and the service's logs:

- ``api``: the service answers (the job is queued);
- ``worker``: the Celery worker says it is ready (torch imported, data preloaded);
- ``finished``: the job has succeeded (worker log);
- ``results``: bounds printed and plot written (the command's output);
- ``exit``: the command has stopped the service and exited.

    python -m bench.cold_start [--repeats 3] [--repo PATH]

``--repo`` runs the commands from another checkout (the "before" of a change).
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
    argv = ["range-test", *SPEC] if command == "in-process" else ["submit", "--embedded", *SPEC]
    env = {**os.environ, "CLR_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}
    for key in ("CLR_DATABASE_URL", "CLR_BROKER_URL", "CLR_TOKEN", "CLR_API_URL"):
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
    if command == "embedded":
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
    parser.add_argument("--repo", type=Path, default=REPO_ROOT, help="checkout to run")
    args = parser.parse_args()
    times: dict[str, list[float]] = {"in-process": [], "embedded": []}
    stages: dict[str, list[float]] = {stage: [] for stage in STAGES}
    with tempfile.TemporaryDirectory(prefix="clr-cold-") as tmp:
        for repeat in range(args.repeats):
            order = ("in-process", "embedded") if repeat % 2 == 0 else ("embedded", "in-process")
            for command in order:
                elapsed, seen = run(command, Path(tmp) / f"{command}-{repeat}", args.repo)
                times[command].append(elapsed)
                for stage, moment in seen.items():
                    if stage in stages and command == "embedded":
                        stages[stage].append(moment)
                print(f"repeat {repeat + 1}: {command:<10} {elapsed:6.2f} s", flush=True)
    medians = {command: statistics.median(values) for command, values in times.items()}
    print()
    for command, value in medians.items():
        runs = ", ".join(f"{t:.2f}" for t in times[command])
        print(f"{command:<10} median {value:6.2f} s  (runs: {runs})")
    ratio = medians["embedded"] / medians["in-process"]
    print(f"embedded / in-process = {ratio:.2f} (target <= 1.5)")
    print("embedded, median seconds from the command's start:")
    for stage in STAGES:
        if stages[stage]:
            print(f"  {stage:<9} {statistics.median(stages[stage]):6.2f}")


if __name__ == "__main__":
    main()
