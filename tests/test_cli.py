"""The xpcnn command: bad input gets one clear line and a non-zero exit; user data is never overwritten."""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from xpcnn.cli import common
from xpcnn.cli.main import main

# Nearly every test here runs the ``xpcnn`` command in a subprocess, which the accelerator fixture does not reach.
pytestmark = pytest.mark.subprocesses

DATA = ["--dataset", "mnist", "--split-test-set", "8000"]  # with --data-dir of the t10k files: mnist-sample's split
SAMPLE = ["--dataset", "mnist-sample"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xpcnn.cli.main", *args], capture_output=True, text=True,
                          timeout=600)


def assert_one_line_error(result: subprocess.CompletedProcess, fragment: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    result = run_cli("train", *SAMPLE, "--limit-train", "2000", "--epochs", "2", "--out", str(out), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["test_accuracy"] > 0.85
    assert {p.name for p in out.iterdir()} >= {"last.npz", "best.npz", "history.jsonl"}
    assert len((out / "history.jsonl").read_text().splitlines()) == 2
    return out


def test_evaluate_json(trained: Path, mnist_dir: Path) -> None:
    result = run_cli("evaluate", str(trained / "best.npz"), "--json")  # the checkpoint's dataset: mnist-sample
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {"accuracy", "loss", "per_class_recall", "confusion_matrix"} <= set(report)
    assert np.sum(report["confusion_matrix"]) == 2000 and report["accuracy"] > 0.85
    assert report["dataset"] == "mnist-sample" and report["images"] == 2000
    same = run_cli("evaluate", str(trained / "best.npz"), "--data-dir", str(mnist_dir), *DATA, "--json")
    assert same.returncode == 0, same.stderr
    assert json.loads(same.stdout)["confusion_matrix"] == report["confusion_matrix"]  # the same 2,000 digits


def test_predict_images(trained: Path, mnist_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    from PIL import Image

    from xpcnn.data import datasets
    test = datasets.load_test_only("mnist", mnist_dir)
    paths = []
    for i in range(8000, 8010):  # held-out digits, drawn dark-on-light and enlarged like a photo of paper
        img = Image.fromarray(255 - test.images[i]).resize((112, 112))
        paths.append(tmp_path / f"digit{i}.png")
        img.save(paths[-1])
    result = run_cli("predict", str(trained / "best.npz"), *map(str, paths))
    assert result.returncode == 0, result.stderr
    predicted = [int(line.split(": ")[1].split()[0]) for line in result.stdout.splitlines()]
    assert np.mean(np.array(predicted) == test.labels[8000:8010]) >= 0.8


def test_existing_outputs_are_not_overwritten(trained: Path) -> None:
    before = (trained / "last.npz").read_bytes()
    result = run_cli("train", *SAMPLE, "--out", str(trained))
    assert_one_line_error(result, "already holds")
    assert (trained / "last.npz").read_bytes() == before


def test_resume_continues(trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "resumed"
    out.mkdir()
    (out / "last.npz").write_bytes((trained / "last.npz").read_bytes())
    result = run_cli("train", "--limit-train", "2000", "--epochs", "3", "--out", str(out), "--resume",
                     str(out / "last.npz"), "--no-progress")  # no --dataset: the checkpoint's
    assert result.returncode == 0, result.stderr
    assert "mnist-sample" in result.stderr and "full MNIST" not in result.stderr
    assert json.loads((out / "history.jsonl").read_text().splitlines()[-1])["epoch"] == 3


def test_resuming_a_finished_run_says_there_is_nothing_to_do(trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "finished"
    out.mkdir()
    (out / "last.npz").write_bytes((trained / "last.npz").read_bytes())
    result = run_cli("train", "--epochs", "2", "--out", str(out), "--resume", str(out / "last.npz"), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "has finished 2 of its 2 epoch(s); pass --epochs 3 or more to train on" in result.stderr
    assert "wrote" not in result.stderr and result.stdout == ""
    # the history the checkpoint holds is written back (a kill may have cut it short); nothing else is written
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["history.jsonl", "last.npz"]
    assert [json.loads(line)["epoch"] for line in (out / "history.jsonl").read_text().splitlines()] == [1, 2]


def test_a_second_run_into_the_same_folder_is_refused(tmp_path: Path) -> None:
    """One run per output folder at a time: the second gets one clear line, the first's files are untouched."""
    from xpcnn.cli.train import _lock_output_folder
    out = tmp_path / "busy"
    held = _lock_output_folder(out)  # as a first run holds it
    try:
        result = run_cli("train", *SAMPLE, "--limit-train", "64", "--epochs", "1", "--out", str(out), "--no-progress")
    finally:
        held.close()
    assert_one_line_error(result, f"another xpcnn train is writing into {out}")
    assert not (out / "last.npz").exists()


@pytest.mark.parametrize("args, fragment", [
    (["train", "--model", "resnet"], "invalid choice: 'resnet'"),
    (["train", "--dataset", "cifar"], "invalid choice: 'cifar'"),
    (["train", "--epochs", "0"], "--epochs: must be positive"),
    (["train", "--epochs", "-3"], "--epochs: must be positive"),
    (["train", "--batch-size", "0"], "--batch-size: must be positive"),
    (["train", "--lr", "-1"], "--lr: must be a finite positive number"),
    (["bench", "--settle", "-1"], "--settle: must be a finite non-negative number"),
    (["bench", "--settle", "inf"], "--settle: must be a finite non-negative number"),
    (["train", "--device", "tpu", "--data-dir", "MNIST", "--split-test-set", "8000"], "unknown device 'tpu'"),
    (["train", "--device", "cuda", "--data-dir", "MNIST", "--split-test-set", "8000"], "CUDA"),
    (["train", "--data-dir", "/nonexistent", "--out", "OUT"], "not found"),
    (["train", "--data-dir", "/nonexistent", "--out", "OUT"], "--dataset mnist-sample (bundled"),
    (["train", *SAMPLE, "--data-dir", "MNIST", "--out", "OUT"], "is bundled with xpcnn and reads no folder"),
    (["train", *SAMPLE, "--split-test-set", "100", "--out", "OUT"], "is already split (8,000 train / 2,000 test"),
    (["evaluate", "CKPT", "--split-test-set", "100"], "is already split"),
    (["evaluate", "/nonexistent.npz", "--dataset", "mnist"], "does not exist"),
    (["predict", "CKPT", "/nonexistent.png"], "no such image file"),
    (["predict", "CKPT", "NOTANIMAGE"], "cannot read it as an image"),
])
def test_bad_input_gets_one_clear_line(args, fragment, trained, mnist_dir, tmp_path) -> None:
    if "cuda" in args and _cuda_usable():
        pytest.skip("a CUDA device is here, so --device cuda is no bad input on this machine")
    bogus = tmp_path / "bogus.png"
    bogus.write_text("this is not a picture")
    replace = {"MNIST": str(mnist_dir), "CKPT": str(trained / "best.npz"), "NOTANIMAGE": str(bogus),
               "OUT": str(tmp_path / "out")}
    assert_one_line_error(run_cli(*[replace.get(a, a) for a in args]), fragment)


def _cuda_usable() -> bool:
    from xpcnn import backend as B
    from xpcnn.errors import XpcnnError
    try:
        B.resolve("cuda")
        return True
    except XpcnnError:
        return False


def _data_args(**given) -> argparse.Namespace:
    return argparse.Namespace(**{"dataset": None, "data_dir": None, "split_test_set": None, "resume": None,
                                 "command": "train", **given})


@pytest.fixture
def offline(tmp_path: Path, monkeypatch) -> Path:
    """No dataset anywhere and no network: an empty cache, XPCNN_DATA and system folder, a closed mirror."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XPCNN_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("XPCNN_SYSTEM_DATA", str(tmp_path / "system"))
    monkeypatch.setenv("XPCNN_MIRROR", f"http://127.0.0.1:{port}/")
    return tmp_path


def test_no_dataset_offline_trains_on_the_sample(offline: Path, capsys) -> None:
    """`xpcnn train` with no data argument and neither MNIST nor a network: the bundled sample, said in one line."""
    args = _data_args()
    common.choose_dataset(args)
    assert args.dataset == "mnist-sample"
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("xpcnn train: full MNIST is not on this machine"), lines
    assert "connection refused" in lines[0] and "--dataset mnist-sample" in lines[0] and "--data-dir DIR" in lines[0]


def test_no_dataset_with_mnist_here_trains_on_mnist(offline: Path, capsys) -> None:
    from xpcnn.data import datasets
    from xpcnn.data.idx import write_idx
    (offline / "env" / "mnist").mkdir(parents=True)
    for part, stem in datasets.FILES.items():
        shape = (2, 28, 28) if part.endswith("images") else (2,)
        write_idx(offline / "env" / "mnist" / (stem + ".gz"), np.zeros(shape, np.uint8))
    args = _data_args()
    common.choose_dataset(args)
    assert args.dataset == "mnist" and capsys.readouterr().err == ""
    for given, dataset in [({"data_dir": "DIR"}, "mnist"), ({"split_test_set": 10}, "mnist"),
                           ({"dataset": "fashion-mnist"}, "fashion-mnist")]:
        args = _data_args(**given)
        common.choose_dataset(args)
        assert args.dataset == dataset


def test_help_for_every_command(capsys) -> None:
    for command in ("train", "evaluate", "predict", "info", "bench"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        assert "usage: xpcnn " + command in capsys.readouterr().out


def test_info_lists_backends(capsys) -> None:
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "numpy" in out and "array_api_strict" in out


def test_a_missing_gpu_is_explained_in_the_commands_words(tmp_path: Path) -> None:
    result = run_cli("train", *SAMPLE, "--device", "cuda", "--epochs", "1", "--no-progress", "--out", str(tmp_path))
    if result.returncode == 0:
        pytest.skip("this machine has a CUDA device and CuPy")
    assert_one_line_error(result, "--device cpu")
    assert "device='cpu'" not in result.stderr
