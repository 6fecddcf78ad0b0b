"""``xpcnn train --resume`` continues the run recorded in the checkpoint, and a run's folder is never damaged:
its settings come from the checkpoint, a flag that contradicts them is one clear line, no file is written
through a symbolic link, no other run's files are replaced, and ``xpcnn evaluate`` scores what the run held out.
All through real ``xpcnn`` processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from xpcnn.backend import host

pytestmark = pytest.mark.subprocesses

RUN = ["train", "--dataset", "mnist-sample", "--limit-train", "256", "--batch-size", "64", "--epochs", "2",
       "--optimizer", "sgd", "--lr", "0.05", "--seed", "3", "--no-progress"]


def xpcnn(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xpcnn.cli.main", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "run"
    result = xpcnn(*RUN, "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture
def run_copy(run_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(run_dir, out)
    return out


def test_the_checkpoint_records_the_whole_run(run_dir: Path) -> None:
    _, meta = host.load_arrays(run_dir / "last.npz")
    run = meta["run"]
    assert {k: run[k] for k in ("model", "dataset", "limit_train", "batch_size", "optimizer", "lr", "momentum",
                                "seed", "epochs")} == {
        "model": "seed-deep", "dataset": "mnist-sample", "limit_train": 256, "batch_size": 64, "optimizer": "sgd",
        "lr": 0.05, "momentum": 0.9, "seed": 3, "epochs": 2}
    assert run["out"] == str(run_dir.resolve())


def test_resume_alone_continues_in_the_checkpoints_folder_with_its_settings(run_copy: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    result = xpcnn("train", "--resume", str(run_copy / "last.npz"), "--epochs", "3", "--no-progress", cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert "--epochs 3: this run now ends after epoch 3 (it was started for 2)" in result.stderr
    assert "seed-deep on mnist-sample (256 train" in result.stderr and "SGD lr=0.05" in result.stderr
    assert "batch size 64" in result.stderr and "resumed at epoch 3" in result.stderr
    assert not (elsewhere / "runs").exists()  # not runs/<default model>-<default dataset>
    history = [json.loads(line) for line in (run_copy / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1, 2, 3]
    _, meta = host.load_arrays(run_copy / "last.npz")
    assert meta["run"]["epochs"] == 3 and meta["trainer"]["global_step"] == 12  # 4 steps of 64 per epoch


@pytest.mark.parametrize(("flag", "value", "recorded"), [
    ("--model", "lenet5", "model: seed-deep"), ("--dataset", "fashion-mnist", "dataset: mnist-sample"),
    ("--batch-size", "32", "batch-size: 64"), ("--limit-train", "512", "limit-train: 256"),
    ("--optimizer", "adam", "optimizer: sgd"), ("--lr", "0.1", "lr: 0.05"), ("--seed", "4", "seed: 3"),
    ("--momentum", "0.5", "momentum: 0.9")])
def test_a_flag_that_contradicts_the_run_is_refused(run_copy: Path, flag: str, value: str, recorded: str) -> None:
    before = snapshot(run_copy)
    result = xpcnn("train", "--resume", str(run_copy / "last.npz"), "--epochs", "3", flag, value)
    one_line_error(result, f"{flag} {value} differs from the run in", recorded, f"drop {flag}")
    assert snapshot(run_copy) == before


def test_a_flag_that_agrees_with_the_run_is_fine(run_copy: Path) -> None:
    result = xpcnn("train", "--resume", str(run_copy / "last.npz"), "--epochs", "3", "--batch-size", "64",
                   "--optimizer", "sgd", "--no-progress")
    assert result.returncode == 0, result.stderr


def test_resuming_a_finished_run_writes_nothing(run_copy: Path) -> None:
    before = snapshot(run_copy)
    result = xpcnn("train", "--resume", str(run_copy / "last.npz"))
    assert result.returncode == 0
    assert result.stderr.strip() == (f"nothing to do: the run in {run_copy / 'last.npz'} has finished 2 of its 2 "
                                     "epoch(s); pass --epochs 3 or more to train on")
    assert snapshot(run_copy) == before


def test_resuming_an_older_checkpoint_over_newer_progress_is_refused(run_copy: Path, tmp_path: Path) -> None:
    older = tmp_path / "copy" / "epoch1.npz"
    first = xpcnn(*RUN, "--epochs", "1", "--out", str(tmp_path / "one"))
    assert first.returncode == 0, first.stderr
    shutil.copy(tmp_path / "one" / "last.npz", older)
    before = snapshot(run_copy)
    result = xpcnn("train", "--resume", str(older), "--epochs", "3")
    one_line_error(result, f"would overwrite {run_copy / 'last.npz'}, which is further along (2 epoch(s) done)",
                   "--out NEW")
    assert snapshot(run_copy) == before


def test_resuming_into_a_new_folder_branches_off_with_the_best_checkpoint(run_copy: Path, tmp_path: Path) -> None:
    branch = tmp_path / "branch"
    result = xpcnn("train", "--resume", str(run_copy / "last.npz"), "--epochs", "3", "--out", str(branch),
                   "--no-progress")
    assert result.returncode == 0, result.stderr
    assert {"last.npz", "best.npz", "history.jsonl"} <= set(os.listdir(branch))
    assert "wrote last.npz, best.npz, history.jsonl" in result.stderr
    history = [json.loads(line) for line in (branch / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1, 2, 3]


def test_resuming_into_another_runs_folder_is_refused(run_copy: Path, run_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(run_dir, other)
    before = snapshot(other)
    result = xpcnn("train", "--resume", str(run_copy / "last.npz"), "--epochs", "3", "--out", str(other))
    one_line_error(result, f"{other} already holds last.npz", "--force")
    assert snapshot(other) == before


def test_a_folder_holding_only_the_users_plot_is_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "history.png").write_bytes(b"my own plot")
    result = xpcnn(*RUN, "--out", str(tmp_path))
    one_line_error(result, "already holds history.png", "--force")
    assert (tmp_path / "history.png").read_bytes() == b"my own plot"


@pytest.mark.parametrize("name", ["history.png", "history.jsonl", "last.npz"])
def test_no_file_is_written_through_a_symbolic_link(tmp_path: Path, name: str) -> None:
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    out = tmp_path / "out"
    out.mkdir()
    (out / name).symlink_to(target)
    one_line_error(xpcnn(*RUN, "--out", str(out)), f"{out / name} is a symbolic link")
    forced = xpcnn(*RUN, "--epochs", "1", "--out", str(out), "--force")
    assert forced.returncode == 0, forced.stderr
    assert target.read_text() == "keep me"
    assert not (out / name).is_symlink()


def test_an_out_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    one_line_error(xpcnn(*RUN, "--out", str(tmp_path / "file")), "is a file, not a folder")


def test_a_checkpoint_without_a_recorded_run_still_resumes(run_copy: Path) -> None:
    arrays, meta = host.load_arrays(run_copy / "last.npz")
    del meta["run"]
    host.save_arrays(run_copy / "last.npz", arrays, meta)
    result = xpcnn("train", "--resume", str(run_copy / "last.npz"), "--epochs", "3", "--batch-size", "64",
                   "--limit-train", "256", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "SGD lr=0.05" in result.stderr


def test_evaluate_scores_the_images_the_run_held_out(tmp_path: Path, mnist_dir: Path) -> None:
    out = tmp_path / "split"
    result = xpcnn("train", "--dataset", "mnist", "--data-dir", str(mnist_dir), "--split-test-set", "9000",
                   "--limit-train", "256", "--epochs", "1", "--out", str(out), "--no-progress")
    assert result.returncode == 0, result.stderr
    scored = xpcnn("evaluate", str(out / "last.npz"), "--json")
    assert scored.returncode == 0, scored.stderr
    report = json.loads(scored.stdout)
    assert report["images"] == 1000
    assert report["which"] == "test files' images 9,000-9,999, held out from training by the run's --split-test-set 9000"
    trained_on = xpcnn("evaluate", str(out / "last.npz"), "--dataset", "mnist", "--data-dir", str(mnist_dir))
    assert trained_on.returncode == 0 and "test set, 10000 images" in trained_on.stdout


def test_a_run_whose_cosine_schedule_reached_zero_resumes_and_says_it_is_done(tmp_path: Path) -> None:
    out = tmp_path / "cosine"
    first = xpcnn(*RUN, "--schedule", "cosine", "--out", str(out))
    assert first.returncode == 0, first.stderr
    _, meta = host.load_arrays(out / "last.npz")
    assert meta["optimizer"]["hyperparameters"]["lr"] == 0  # where CosineAnnealingLR ends
    again = xpcnn("train", "--resume", str(out / "last.npz"))
    assert again.returncode == 0, again.stderr
    assert "its cosine schedule has reached 0, so it cannot train on" in again.stderr
