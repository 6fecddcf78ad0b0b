"""Interrupted runs resume bit for bit: SIGINT, SIGTERM and SIGKILL at chosen points of a real ``xpcnn train``.

Each case runs the command in a subprocess through ``bench/inject.py``, which sends the signal during the K-th
call of a function (forward, loss, backward, optimizer step, validation, schedule step, checkpoint write,
history line), then resumes with ``xpcnn train --resume OUT/last.npz`` alone and compares the result with one
uninterrupted run: every weight and optimizer slot equal bit for bit, the same history (all but the timings),
no temporary file left. The model has dropout (mnist-cnn), the schedule steps every epoch.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from xpcnn.data import datasets

pytestmark = pytest.mark.subprocesses

ROOT = Path(__file__).resolve().parents[1]
#: 2 epochs of 8 steps (256 images, batch 32), validation on 500 images (2 batches of 256).
RUN = ["train", "--model", "mnist-cnn", "--dataset", "mnist", "--data-dir", str(datasets.SAMPLE_DIR),
       "--split-test-set", "9500", "--limit-train", "256", "--batch-size", "32", "--epochs", "2",
       "--schedule", "step", "--step-size", "1", "--gamma", "0.5", "--no-progress"]
TIMINGS = ("images_per_s", "seconds")


def xpcnn(*args: str, at: str | None = None, sig: str = "SIGINT") -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "bench" / "inject.py"), "--at", at, "--signal", sig, "--"] if at else \
        [sys.executable, "-m", "xpcnn.cli.main"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=300)


def outcome(out: Path) -> tuple[dict[str, np.ndarray], list[dict]]:
    """The arrays of ``out/last.npz`` (its header aside) and the history lines without timings."""
    with np.load(out / "last.npz", allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files if name != "__meta__"}
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    return arrays, [{k: v for k, v in record.items() if k not in TIMINGS} for record in history]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[dict[str, np.ndarray], list[dict]]:
    out = tmp_path_factory.mktemp("whole")
    result = xpcnn(*RUN, "--out", str(out))
    assert result.returncode == 0, result.stderr
    return outcome(out)


# (point:K, signal): a training step's parts in epoch 1 and 2, its last step, validation, the schedule, the
# checkpoint write (last.npz of epoch 1 is write 1, best.npz write 2, last.npz of epoch 2 write 3), the history.
CASES = [("forward:1", "SIGINT"), ("forward:3", "SIGINT"), ("loss:7", "SIGINT"), ("backward:5", "SIGINT"),
         ("optimizer-step:8", "SIGINT"), ("optimizer-step:11", "SIGINT"), ("forward:10", "SIGINT"),
         ("validation:1", "SIGINT"), ("schedule-step:1", "SIGINT"), ("checkpoint-write:1", "SIGINT"),
         ("checkpoint-write:2", "SIGINT"), ("history-write:1", "SIGINT"), ("backward:12", "SIGTERM"),
         ("validation:2", "SIGTERM"), ("checkpoint-write:3", "SIGTERM")]


@pytest.mark.parametrize(("at", "sig"), CASES, ids=[f"{s}-{a}" for a, s in CASES])
def test_an_interrupted_run_resumes_bit_for_bit(tmp_path, uninterrupted, at, sig) -> None:
    first = xpcnn(*RUN, "--out", str(tmp_path), at=at, sig=sig)
    assert first.returncode == 130, first.stderr
    assert f"xpcnn train --resume {tmp_path / 'last.npz'}" in first.stderr
    resumed = xpcnn("train", "--resume", str(tmp_path / "last.npz"), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    arrays, history = outcome(tmp_path)
    expected_arrays, expected_history = uninterrupted
    assert arrays.keys() == expected_arrays.keys()
    assert [name for name in arrays if not np.array_equal(arrays[name], expected_arrays[name])] == []
    assert history == expected_history
    assert list(tmp_path.glob("*.tmp")) == []


# A kill leaves no chance to save: the run goes on from the last checkpoint written whole.
KILLS = ["checkpoint-write:1", "checkpoint-write:3", "history-write:1", "history-write:2", "validation:2"]


@pytest.mark.parametrize("at", KILLS)
def test_a_killed_run_resumes_from_its_last_whole_checkpoint(tmp_path, uninterrupted, at) -> None:
    first = xpcnn(*RUN, "--out", str(tmp_path), at=at, sig="SIGKILL")
    assert first.returncode == -signal.SIGKILL
    if not (tmp_path / "last.npz").exists():  # killed while writing the first checkpoint: start again
        assert at == "checkpoint-write:1"
        assert list(tmp_path.glob("last.npz.*.tmp")), "the unfinished write should have left its temporary file"
        restarted = xpcnn(*RUN, "--out", str(tmp_path))
        assert restarted.returncode == 0, restarted.stderr
        assert "removed 1 unfinished temporary file" in restarted.stderr
    else:
        resumed = xpcnn("train", "--resume", str(tmp_path / "last.npz"), "--no-progress")
        assert resumed.returncode == 0, resumed.stderr
    arrays, history = outcome(tmp_path)
    expected_arrays, expected_history = uninterrupted
    assert [name for name in arrays if not np.array_equal(arrays[name], expected_arrays[name])] == []
    assert history == expected_history  # an epoch whose history line the kill lost is back
    assert list(tmp_path.glob("*.tmp")) == []
