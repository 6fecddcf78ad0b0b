"""The fault table: try to lose or corrupt a user's work, many times and many ways, and count what held.

    python bench/faults.py [--trials N] [--seed S] [--out bench/results/DATE-faults.md]

Every trial is a real ``xpcnn`` process (``bench/inject.py`` sends the signals). A trial *holds* when xpcnn did
what its README promises: an interrupted or killed run resumes to the same weights, optimizer state and history
as an uninterrupted one (bit for bit), every bad input is one line on stderr with a non-zero exit and no
traceback, and no file of the user's changes. The table lists each kind of fault, how often it was tried and
how often it held; the failures are listed under it. Runs on the bundled sample in a few minutes.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from xpcnn.backend import host  # noqa: E402
from xpcnn.data import datasets, idx  # noqa: E402

#: 2 epochs of 8 steps, dropout, a schedule stepped each epoch, validation on 500 images.
RUN = ["train", "--model", "mnist-cnn", "--dataset", "mnist", "--data-dir", str(datasets.SAMPLE_DIR),
       "--split-test-set", "9500", "--limit-train", "256", "--batch-size", "32", "--epochs", "2",
       "--schedule", "step", "--step-size", "1", "--gamma", "0.5", "--no-progress"]
#: point -> the K (call number) a trial draws from: every call the run above makes.
POINTS = {"forward": 20, "loss": 16, "backward": 16, "optimizer-step": 16, "validation": 2, "schedule-step": 2,
          "checkpoint-write": 4, "history-write": 2}
TIMINGS = ("images_per_s", "seconds")


def xpcnn(*args: str, at: str | None = None, sig: str = "SIGINT", cwd: Path | None = None) -> subprocess.CompletedProcess:
    prefix = [str(ROOT / "bench" / "inject.py"), "--at", at, "--signal", sig, "--"] if at else ["-m", "xpcnn.cli.main"]
    return subprocess.run([sys.executable, *prefix, *args], capture_output=True, text=True, timeout=600, cwd=cwd)


def outcome(out: Path) -> tuple[dict[str, np.ndarray], list[dict]]:
    with np.load(out / "last.npz", allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files if name != "__meta__"}
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    return arrays, [{k: v for k, v in record.items() if k not in TIMINGS} for record in history]


def same(a: tuple[dict, list], b: tuple[dict, list]) -> str | None:
    """None if two outcomes are equal bit for bit, else what differs."""
    differ = [name for name in a[0] if name not in b[0] or not np.array_equal(a[0][name], b[0][name])]
    if differ or a[0].keys() != b[0].keys():
        return f"arrays differ: {differ[:3]}"
    return None if a[1] == b[1] else "history differs"


def one_line_error(result: subprocess.CompletedProcess) -> str | None:
    """None if ``result`` failed with one line on stderr and no traceback, else what it did instead."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    if result.returncode == 0:
        return "exit 0"
    if "Traceback" in result.stderr:
        return "traceback: " + lines[-1][:120]
    return None if len(lines) == 1 else f"{len(lines)} lines on stderr"


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")}


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, int, int]] = []
        self.failures: list[str] = []

    def run(self, kind: str, what: str, trials: list[Callable[[], str | None]], names: list[str]) -> None:
        held = 0
        for trial, name in zip(trials, names):
            try:
                problem = trial()
            except Exception as exc:  # noqa: BLE001 - a crash of the trial is a failure to report, not to raise
                problem = f"{type(exc).__name__}: {exc}"
            held += problem is None
            if problem is not None:
                self.failures.append(f"{kind} / {name}: {problem}")
        self.rows.append((kind, what, len(trials), held))
        print(f"{kind}: {held}/{len(trials)} held", file=sys.stderr, flush=True)


# -- the kinds of fault ------------------------------------------------------------------------------------
def signal_trial(work: Path, baseline: tuple, point: str, k: int, sig: str) -> str | None:
    out = work / f"{sig}-{point}-{k}-{random.random():.6f}"
    first = xpcnn(*RUN, "--out", str(out), at=f"{point}:{k}", sig=sig)
    if sig == "SIGKILL":
        if first.returncode not in (0, -signal.SIGKILL):
            return f"exit {first.returncode}: {first.stderr[-200:]}"
    elif first.returncode not in (0, 130):
        return f"exit {first.returncode}: {first.stderr[-200:]}"
    if not (out / "last.npz").exists():  # killed before the first checkpoint: the same command starts again
        again = xpcnn(*RUN, "--out", str(out))
    else:
        again = xpcnn("train", "--resume", str(out / "last.npz"), "--no-progress")
    if again.returncode != 0:
        return f"resume exit {again.returncode}: {again.stderr[-200:]}"
    if list(out.glob("*.tmp")):
        return "temporary files left"
    problem = same(outcome(out), baseline)
    shutil.rmtree(out, ignore_errors=True)
    return problem


def bad_flag_trial(work: Path, run_dir: Path, flag: str, value: str) -> str | None:
    copy = work / f"flag{flag}{value}"
    shutil.copytree(run_dir, copy)
    before = snapshot(copy)
    problem = one_line_error(xpcnn("train", "--resume", str(copy / "last.npz"), "--epochs", "3", flag, value))
    return problem or (None if snapshot(copy) == before else "files changed")


def overwrite_trials(work: Path, run_dir: Path) -> tuple[list[Callable[[], str | None]], list[str]]:
    def symlink(name: str) -> Callable[[], str | None]:
        def trial() -> str | None:
            out = work / f"link-{name}"
            out.mkdir()
            target = work / f"precious-{name}"
            target.write_text("keep me")
            (out / name).symlink_to(target)
            problem = one_line_error(xpcnn(*RUN, "--epochs", "1", "--out", str(out)))
            forced = xpcnn(*RUN, "--epochs", "1", "--out", str(out), "--force")
            if forced.returncode != 0:
                return f"--force failed: {forced.stderr[-200:]}"
            return problem or (None if target.read_text() == "keep me" else "the link's target was overwritten")
        return trial

    def users_plot() -> str | None:
        out = work / "plot-only"
        out.mkdir()
        (out / "history.png").write_bytes(b"mine")
        problem = one_line_error(xpcnn(*RUN, "--out", str(out)))
        return problem or (None if (out / "history.png").read_bytes() == b"mine" else "overwritten")

    def other_run() -> str | None:
        out = work / "other-run"
        shutil.copytree(run_dir, out)
        before = snapshot(out)
        problem = one_line_error(xpcnn(*RUN, "--seed", "1", "--out", str(out)))
        return problem or (None if snapshot(out) == before else "files changed")

    def older_over_newer() -> str | None:
        out = work / "older"
        shutil.copytree(run_dir, out)
        host.save_arrays(out / "old.npz", *_rewound(out / "last.npz"))
        before = snapshot(out)
        problem = one_line_error(xpcnn("train", "--resume", str(out / "old.npz"), "--epochs", "3"))
        return problem or (None if snapshot(out) == before else "files changed")

    def concurrent() -> str | None:
        out = work / "concurrent"
        first = subprocess.Popen([sys.executable, "-m", "xpcnn.cli.main", *RUN, "--out", str(out)],
                                 stderr=subprocess.PIPE, text=True)
        time.sleep(1.5)
        second = xpcnn(*RUN, "--out", str(out))
        first.wait(timeout=600)
        problem = one_line_error(second)
        return problem or (None if first.returncode == 0 else f"the first run failed: {first.returncode}")

    trials = {f"symlink {name}": symlink(name) for name in ("last.npz", "history.jsonl", "history.png")}
    trials.update({"the user's own history.png": users_plot, "another run's folder": other_run,
                   "an older checkpoint over newer progress": older_over_newer, "two runs into one folder": concurrent})
    return list(trials.values()), list(trials)


def _rewound(path: Path) -> tuple[dict, dict]:
    arrays, meta = host.load_arrays(path)
    meta["trainer"]["global_step"] = 1
    return arrays, meta


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=12, help="random signal points per signal (default 12)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / f"{time.strftime('%Y-%m-%d')}-faults.md")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    table, started = Table(), time.time()
    with tempfile.TemporaryDirectory(prefix="xpcnn-faults-") as tmp:
        work = Path(tmp)
        whole = xpcnn(*RUN, "--out", str(work / "whole"))
        if whole.returncode != 0:
            raise SystemExit(f"the uninterrupted run failed: {whole.stderr}")
        baseline = outcome(work / "whole")
        for sig in ("SIGINT", "SIGTERM", "SIGKILL"):
            draws = [(point, rng.randint(1, POINTS[point])) for point in rng.choices(list(POINTS), k=args.trials)]
            table.run(f"{sig} at a random point, then resume", "points: " + ", ".join(sorted(POINTS)),
                      [lambda p=p, k=k, s=sig: signal_trial(work, baseline, p, k, s) for p, k in draws],
                      [f"{p}:{k}" for p, k in draws])
        flags = [("--model", "lenet5"), ("--dataset", "mnist-sample"), ("--batch-size", "64"),
                 ("--limit-train", "128"), ("--optimizer", "sgd"), ("--lr", "0.5"), ("--seed", "9"),
                 ("--split-test-set", "9000")]
        table.run("resume with a flag that contradicts the run", "one line, exit 2, no file changed",
                  [lambda f=f, v=v: bad_flag_trial(work, work / "whole", f, v) for f, v in flags],
                  [f"{f} {v}" for f, v in flags])
        trials, names = overwrite_trials(work, work / "whole")
        table.run("output folder: links, other files, other runs", "one line, nothing overwritten", trials, names)
    write(args.out, table, time.time() - started, args)
    return 0 if not table.failures else 1


def write(path: Path, table: Table, seconds: float, args: argparse.Namespace) -> None:
    lines = [f"# Fault table, {time.strftime('%Y-%m-%d')}", "",
             f"Command: `python bench/faults.py --trials {args.trials} --seed {args.seed}` ({seconds / 60:.1f} min on "
             "this machine). Each trial is a real `xpcnn` process; see the script's docstring for what *held* means.",
             "", "| fault | what was checked | tried | held |", "|---|---|---:|---:|"]
    lines += [f"| {kind} | {what} | {tried} | {held} |" for kind, what, tried, held in table.rows]
    lines += ["", "## Failures", ""] + ([f"- {line}" for line in table.failures] or ["none"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
