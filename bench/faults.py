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


def xpcnn(*args: str, at: str | None = None, sig: str = "SIGINT",
          cwd: Path | None = None) -> subprocess.CompletedProcess:
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


def stops_with_one_error(result: subprocess.CompletedProcess) -> tuple[str | None, str]:
    """For a command that may print progress and warnings first: (None, the error line) if it failed with
    exactly one error line, last, and no traceback; else (what it did instead, "")."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if ": error: " in line]
    if result.returncode == 0:
        return "exit 0", ""
    if "Traceback" in result.stderr:
        return "traceback: " + lines[-1][:120], ""
    if len(errors) != 1 or lines[-1] != errors[0]:
        return f"{len(errors)} error lines", ""
    return None, errors[0]


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


def checkpoint_trials(work: Path, source: Path, rng: random.Random, count: int
                      ) -> tuple[list[Callable[[], str | None]], list[str]]:
    """Damaged checkpoints given to ``xpcnn evaluate``: cut short, bytes flipped, header fields replaced by
    values of the wrong kind. Holds when the file is refused in one line, or (a flip the zip's CRC-32 does
    not cover) evaluated without a traceback."""
    data = source.read_bytes()
    arrays, meta = host.load_arrays(source)
    paths = list(_leaves(meta))

    def evaluate(damaged: Path, may_load: bool) -> str | None:
        result = xpcnn("evaluate", str(damaged), "--json")
        if result.returncode == 0:
            return None if may_load else "accepted"
        return one_line_error(result) or (None if str(damaged) in result.stderr else "the error does not name the file")

    def truncated(cut: int) -> Callable[[], str | None]:
        def trial() -> str | None:
            damaged = work / f"cut{cut}.npz"
            damaged.write_bytes(data[:cut])
            return evaluate(damaged, may_load=False)
        return trial

    def flipped(offset: int) -> Callable[[], str | None]:
        def trial() -> str | None:
            damaged = work / f"flip{offset}.npz"
            damaged.write_bytes(data[:offset] + bytes([data[offset] ^ 0xFF]) + data[offset + 1:])
            return evaluate(damaged, may_load=True)
        return trial

    def mutated(path: tuple, value: object) -> Callable[[], str | None]:
        def trial() -> str | None:
            damaged = work / f"field{abs(hash((path, repr(value))))}.npz"
            header = json.loads(json.dumps(meta))
            node = header
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = value
            host.save_arrays(damaged, arrays, header)
            return evaluate(damaged, may_load=True)
        return trial

    wrong = [None, "x", -1, 0, 1e300, [], {}, [1, 2, 3], True]
    trials: dict[str, Callable[[], str | None]] = {}
    for _ in range(count):
        cut = rng.randrange(len(data))
        trials[f"cut at byte {cut:,}"] = truncated(cut)
        offset = rng.randrange(len(data))
        trials[f"byte {offset:,} flipped"] = flipped(offset)
        for _ in range(3):
            path, value = rng.choice(paths), rng.choice(wrong)
            trials[f"{'.'.join(map(str, path))} = {json.dumps(value)}"] = mutated(path, value)
    return list(trials.values()), list(trials)


def _leaves(node: object, path: tuple = ()):
    """The paths to every value in a JSON document (the history's records aside: one is enough)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, (*path, key))
    elif isinstance(node, list) and node and path[-1:] != ("history",):
        for i, value in enumerate(node[:3]):
            yield from _leaves(value, (*path, i))
    if path:
        yield path


def data_trials(work: Path) -> tuple[list[Callable[[], str | None]], list[str]]:
    """Damaged or wrong data files behind ``--data-dir``: each must be one error line naming the file."""
    images = idx.read_images(datasets.SAMPLE_DIR / "t10k-images-idx3-ubyte.gz")
    labels = idx.read_labels(datasets.SAMPLE_DIR / "t10k-labels-idx1-ubyte.gz")

    def folder(name: str, images_array=images, labels_array=labels, image_dtype: str = "uint8",
               label_dtype: str = "uint8") -> Path:
        where = work / f"data-{name}"
        where.mkdir()
        idx.write_idx(where / "t10k-images-idx3-ubyte.gz", images_array.astype(image_dtype), dtype=image_dtype)
        idx.write_idx(where / "t10k-labels-idx1-ubyte.gz", labels_array.astype(label_dtype), dtype=label_dtype)
        return where

    def case(make: Callable[[], Path], fragment: str, dataset: str = "mnist") -> Callable[[], str | None]:
        def trial() -> str | None:
            where = make()
            result = xpcnn("train", "--dataset", dataset, "--data-dir", str(where), "--split-test-set", "100",
                           "--limit-train", "64", "--epochs", "1", "--no-progress", "--out", str(where / "run"))
            problem, line = stops_with_one_error(result)
            return problem or (None if fragment in line else f"the error does not say {fragment!r}: {line}")
        return trial

    def cut_short() -> Path:
        where = folder("cut")
        path = where / "t10k-images-idx3-ubyte.gz"
        path.write_bytes(path.read_bytes()[:5000])
        return where

    def copy_of_sample() -> Path:
        where = work / "data-mnist-as-fashion"
        shutil.copytree(datasets.SAMPLE_DIR, where)
        return where

    cases = {
        "images cut short": case(cut_short, "t10k-images-idx3-ubyte.gz"),
        "float32 images": case(lambda: folder("float", image_dtype="float32"), "t10k-images-idx3-ubyte.gz"),
        "float32 labels": case(lambda: folder("flabels", label_dtype="float32"), "t10k-labels-idx1-ubyte.gz"),
        "fewer labels than images": case(lambda: folder("count", labels_array=labels[:9000]), "t10k-labels-idx1"),
        "a label out of range": case(lambda: folder("range", labels_array=np.where(labels == 3, 12, labels)),
                                     "t10k-labels-idx1-ubyte.gz"),
        "32x32 images": case(lambda: folder("size", images_array=np.pad(images, ((0, 0), (2, 2), (2, 2)))),
                             "t10k-images-idx3-ubyte.gz"),
        "no images": case(lambda: folder("empty", images_array=images[:0], labels_array=labels[:0]),
                          "t10k-images-idx3-ubyte.gz"),
        "MNIST's files as Fashion-MNIST": case(copy_of_sample, "mnist", dataset="fashion-mnist"),
        "a --data-dir that does not exist": case(lambda: work / "nowhere", "nowhere"),
    }
    return list(cases.values()), list(cases)


def divergence_trials(work: Path) -> tuple[list[Callable[[], str | None]], list[str]]:
    def sgd() -> str | None:
        out = work / "diverge-sgd"
        result = xpcnn(*RUN, "--optimizer", "sgd", "--lr", "1e6", "--out", str(out))
        problem, line = stops_with_one_error(result)
        if problem is None and "diverged" not in line:
            problem = f"not a divergence message: {line}"
        for name in ("last.npz", "best.npz"):
            if (out / name).exists():
                with np.load(out / name) as archive:
                    if not all(np.isfinite(archive[k]).all() for k in archive.files if k != "__meta__"):
                        return f"{name} holds non-finite weights"
        return problem

    def adam() -> str | None:
        out = work / "diverge-adam"
        result = xpcnn(*RUN, "--lr", "1e6", "--out", str(out))
        history = out / "history.jsonl"
        for line in [result.stdout, *(history.read_text().splitlines() if history.exists() else [])]:
            if line.strip():
                json.loads(line, parse_constant=lambda name: (_ for _ in ()).throw(ValueError(name)))
        return None if result.returncode in (0, 2) and "Traceback" not in result.stderr else result.stderr[-200:]

    def huge_dense() -> str | None:
        arrays, meta = host.load_arrays(work / "whole" / "last.npz")
        dense = next(layer for layer in meta["model_config"]["layers"] if layer["type"] == "Dense")
        dense["in_features"] = 10**12
        host.save_arrays(work / "huge.npz", arrays, meta)
        return one_line_error(xpcnn("evaluate", str(work / "huge.npz")))

    return [sgd, adam, huge_dense], ["sgd --lr 1e6 (stops, nothing non-finite saved)",
                                     "adam --lr 1e6 (strict JSON everywhere)",
                                     "a checkpoint whose Dense layer needs 10^12 inputs"]


def _rewound(path: Path) -> tuple[dict, dict]:
    arrays, meta = host.load_arrays(path)
    meta["trainer"]["global_step"] = 1
    return arrays, meta


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=12, help="random signal points per signal (default 12)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path,
                        default=ROOT / "bench" / "results" / f"{time.strftime('%Y-%m-%d')}-faults.md")
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
        trials, names = checkpoint_trials(work, work / "whole" / "last.npz", rng, args.trials)
        table.run("damaged checkpoint given to evaluate", "cut short, a byte flipped, a header field of the wrong "
                  "kind: refused in one line naming the file (or read, where a flip changes nothing checked)",
                  trials, names)
        trials, names = data_trials(work)
        table.run("bad data files behind --data-dir", "one error line naming the file", trials, names)
        trials, names = divergence_trials(work)
        table.run("divergence and resources", "a clear stop, strict JSON, one line", trials, names)
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
