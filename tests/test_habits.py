"""Habits from Keras and PyTorch (issue 17, part B): ``fit(verbose=...)``, normalization per dataset, one-call
``model.save`` / ``xpcnn.load``, the schedule / weight-decay / early-stopping flags of ``xpcnn train``, plots
with whole-number epochs and a title, a progress bar that fits 80 columns, and colour images."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest

import xpcnn
from xpcnn import backend as B
from xpcnn.backend import host
from xpcnn.checkpoint import load_checkpoint, save_checkpoint
from xpcnn.cli import train_settings
from xpcnn.cli.main import main
from xpcnn.data.batches import normalize
from xpcnn.data.datasets import Split
from xpcnn.errors import CheckpointError, ShapeError
from xpcnn.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU
from xpcnn.training import EarlyStopping, ModelCheckpoint, Trainer
from xpcnn.training.trainer import BAR_FORMAT, MNIST_NORMALIZATION, bar_postfix

FASHION = (0.2860, 0.3530)


def synthetic(n: int = 64, size: int = 28, channels: int | None = None, dataset: str | None = None,
              seed: int = 0) -> Split:
    """``n`` random uint8 images ``(n, size, size)`` (or ``(n, channels, size, size)``) with labels 0-9."""
    rng = np.random.default_rng(seed)
    shape = (n, size, size) if channels is None else (n, channels, size, size)
    split = Split(rng.integers(0, 256, shape, dtype=np.uint8), rng.integers(0, 10, n).astype(np.int64))
    split.dataset = dataset  # a field of Split; set as an attribute so this works with or without it
    return split


def captured(capsys) -> tuple[str, str]:
    """stdout and stderr so far, without the one-time note that kernels are being compiled."""
    out, err = capsys.readouterr()
    return out, "".join(line for line in err.splitlines(keepends=True) if not line.startswith("xpcnn: compiling"))


def small_trainer(**kwargs) -> Trainer:
    model = xpcnn.models.build("seed-simple")
    return Trainer(model, xpcnn.optim.SGD(model, 0.01), **kwargs)


# -- 1. fit(verbose=...) -------------------------------------------------------------------------------
def test_verbose_0_is_silent(capsys) -> None:
    small_trainer().fit(synthetic(), synthetic(seed=1), epochs=2, verbose=0)
    assert captured(capsys) == ("", "")


def test_verbose_2_prints_one_line_per_epoch_to_stderr(capsys) -> None:
    small_trainer().fit(synthetic(), synthetic(seed=1), epochs=2, batch_size=16, verbose=2)
    out, err = captured(capsys)
    assert out == ""
    assert "%|" not in err and "\r" not in err  # no progress bar
    lines = err.splitlines()
    assert [line.split(":")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"]
    for line in lines:
        assert re.search(r"loss \d+\.\d{4}, accuracy \d\.\d{4}, \d+ img/s, \d+\.\d s "
                         r"\| val_loss \d+\.\d{4}, val_accuracy \d\.\d{4}$", line), line


def test_verbose_1_shows_the_bar_and_the_epoch_line(capsys) -> None:
    trainer = small_trainer()
    history = trainer.fit(synthetic(), epochs=1, batch_size=16, verbose=1)
    out, err = captured(capsys)
    assert out == ""
    assert "epoch 1/1 " in err and "%|" in err and "4/4" in err  # the bar: 4 batches of 16
    assert bar_postfix(history[0]["loss"], history[0]["accuracy"], history[0]["images_per_s"]) in err
    epoch_lines = [line for line in re.split(r"[\r\n]", err) if line.startswith("epoch 1/1: ")]
    assert len(epoch_lines) == 1 and "img/s" in epoch_lines[0] and "val_loss" not in epoch_lines[0]


def test_verbose_defaults_to_1_and_progress_false_keeps_meaning_silent(capsys) -> None:
    small_trainer().fit(synthetic(), epochs=1)
    assert "%|" in captured(capsys)[1]
    small_trainer(progress=False).fit(synthetic(), epochs=1)
    assert captured(capsys) == ("", "")
    small_trainer(progress=False).fit(synthetic(), epochs=1, verbose=2)
    assert captured(capsys)[1].startswith("epoch 1/1: loss ")


def test_verbose_refuses_other_values() -> None:
    with pytest.raises(ValueError, match="verbose must be 0"):
        small_trainer().fit(synthetic(), verbose=3)


def test_schedule_rate_shows_in_the_epoch_line(capsys) -> None:
    model = xpcnn.models.build("seed-simple")
    optimizer = xpcnn.optim.SGD(model, 0.1)
    trainer = Trainer(model, optimizer, schedule=xpcnn.optim.StepLR(optimizer, step_size=1, gamma=0.5))
    trainer.fit(synthetic(), epochs=2, verbose=2)
    lines = captured(capsys)[1].splitlines()
    assert lines[0].endswith("| lr 0.1") and lines[1].endswith("| lr 0.05")


# -- 2. normalization per dataset -----------------------------------------------------------------------
def test_normalization_follows_the_split_dataset(tmp_path: Path) -> None:
    trainer = small_trainer(progress=False)
    trainer.fit(synthetic(dataset="fashion-mnist"), epochs=1, callbacks=[ModelCheckpoint(tmp_path)])
    assert trainer.normalization == FASHION and trainer.model.normalization == FASHION
    assert load_checkpoint(tmp_path / "last.npz").meta["trainer"]["normalization"] == list(FASHION)


@pytest.mark.parametrize("dataset", [None, "not-a-known-dataset"])
def test_normalization_falls_back_to_mnist(dataset) -> None:
    trainer = small_trainer(progress=False)
    trainer.fit(synthetic(dataset=dataset), epochs=1)
    assert trainer.normalization == MNIST_NORMALIZATION


def test_explicit_normalization_wins() -> None:
    trainer = small_trainer(progress=False, normalization=(0.5, 0.25))
    trainer.fit(synthetic(dataset="fashion-mnist"), epochs=1)
    assert trainer.normalization == (0.5, 0.25)


def test_normalization_reaches_the_data() -> None:
    """Evaluating a Fashion-MNIST split uses Fashion-MNIST's constants: the same loss as passing them."""
    model = xpcnn.models.build("seed-deep")
    split = synthetic(dataset="fashion-mnist")
    chosen = Trainer(model, progress=False).evaluate(split)["loss"]
    assert chosen == Trainer(model, normalization=FASHION, progress=False).evaluate(split)["loss"]
    assert chosen != Trainer(model, normalization=MNIST_NORMALIZATION, progress=False).evaluate(split)["loss"]


@pytest.mark.parametrize("bad", [(0.1, 0.0), (0.1, -1.0), (float("nan"), 0.3), (0.1,), "ab"])
def test_bad_normalization_is_refused(bad) -> None:
    with pytest.raises(ValueError, match="normalization must be"):
        small_trainer(normalization=bad)


# -- 3. model.save / xpcnn.load -------------------------------------------------------------------------
def test_save_and_load_a_whole_model(tmp_path: Path) -> None:
    model = xpcnn.models.build("mnist-cnn", seed=3)
    model.normalization = FASHION
    path = model.save(tmp_path / "model.npz")
    assert path == tmp_path / "model.npz" and sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]
    loaded = xpcnn.load(path)
    assert loaded.config() == model.config() and loaded.name == "mnist-cnn" and loaded.dtype == "float32"
    assert loaded.normalization == FASHION
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(B.to_numpy(loaded.state_dict()[key]), B.to_numpy(value), err_msg=key)


def test_save_and_load_keep_float64(tmp_path: Path) -> None:
    model = xpcnn.models.build("seed-deep").to("cpu", dtype="float64")
    loaded = xpcnn.load(model.save(tmp_path / "model64.npz"))
    assert loaded.dtype == "float64"
    assert all(B.to_numpy(p).dtype == np.float64 for p in loaded.parameters())
    np.testing.assert_array_equal(B.to_numpy(loaded.parameters()[0]), B.to_numpy(model.parameters()[0]))
    images = synthetic(8).images
    np.testing.assert_array_equal(Trainer(loaded, progress=False).predict(images),
                                  Trainer(model, progress=False).predict(images))


def test_load_onto_another_backend(tmp_path: Path) -> None:
    pytest.importorskip("array_api_strict")
    model = xpcnn.models.build("seed-simple")
    loaded = xpcnn.load(model.save(tmp_path / "model.npz"), backend="array_api_strict")
    assert B.placement_of(loaded.parameters()[0]).backend == "array_api_strict"
    np.testing.assert_array_equal(B.to_numpy(loaded.parameters()[0]), B.to_numpy(model.parameters()[0]))


def test_load_takes_a_training_checkpoint(tmp_path: Path) -> None:
    trainer = small_trainer(progress=False)
    trainer.fit(synthetic(dataset="fashion-mnist"), synthetic(seed=1), epochs=1,
                callbacks=[ModelCheckpoint(tmp_path)])
    for name in ("last.npz", "best.npz"):
        model = xpcnn.load(tmp_path / name)
        assert model.normalization == FASHION
        np.testing.assert_array_equal(B.to_numpy(model.state_dict()["0.weight"]),
                                      B.to_numpy(trainer.model.state_dict()["0.weight"]))
    # a Trainer on the loaded model predicts with the constants it was trained with
    images = synthetic(8).images
    np.testing.assert_array_equal(Trainer(xpcnn.load(tmp_path / "last.npz"), progress=False).predict(images),
                                  trainer.predict(images))


def test_load_errors_name_the_file_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    np.savez(tmp_path / "plain.npz", weights=np.zeros(3))
    np.save(tmp_path / "array.npy", np.zeros(3))
    save_checkpoint(tmp_path / "nomodel.npz", xpcnn.models.build("seed-simple"))
    header = load_checkpoint(tmp_path / "nomodel.npz").meta
    header.pop("model_config")
    host.save_arrays(tmp_path / "nomodel.npz", {}, header)
    cases = {"missing.npz": "does not exist", "junk.npz": "not a readable", "plain.npz": "not a readable",
             "array.npy": "not a readable", "nomodel.npz": "holds no model description", ".": "is a folder"}
    for name, fragment in cases.items():
        path = tmp_path / name
        with pytest.raises(CheckpointError) as info:
            xpcnn.load(path)
        message = str(info.value)
        assert fragment in message and str(path) in message and "\n" not in message, message


def test_load_into_a_wrong_state_names_the_file(tmp_path: Path) -> None:
    path = xpcnn.models.build("seed-simple").save(tmp_path / "model.npz")
    arrays, header = host.load_arrays(path)
    arrays["model:0.weight"] = np.zeros((8, 1, 3, 4), np.float32)
    host.save_arrays(path, arrays, header)
    with pytest.raises(CheckpointError, match=re.escape(str(path)) + r": state dict does not fit"):
        xpcnn.load(path)


def test_load_never_unpickles(evil_checkpoint) -> None:
    path, marker = evil_checkpoint
    with pytest.raises(CheckpointError, match="not a readable"):
        xpcnn.load(path)
    assert not marker.exists()


# -- 4. --schedule, --weight-decay, --early-stopping ----------------------------------------------------
@pytest.mark.parametrize("args, fragment", [
    (["--weight-decay", "-1"], "--weight-decay: must be a finite non-negative number, got -1"),
    (["--weight-decay", "nan"], "--weight-decay: must be a finite non-negative number, got nan"),
    (["--weight-decay", "inf"], "--weight-decay: must be a finite non-negative number, got inf"),
    (["--gamma", "0"], "--gamma: must be a finite positive number, got 0"),
    (["--gamma", "inf"], "--gamma: must be a finite positive number, got inf"),
    (["--lr", "inf"], "--lr: must be a finite positive number, got inf"),
    (["--momentum", "-0.5"], "--momentum: must be a finite non-negative number"),
    (["--step-size", "0"], "--step-size: must be positive"),
    (["--early-stopping", "0"], "--early-stopping: must be positive"),
    (["--early-stopping", "-2"], "--early-stopping: must be positive"),
    (["--schedule", "linear"], "invalid choice: 'linear'"),
    (["--label-smoothing", "1.5"], "--label-smoothing: expected a number in [0, 1], got '1.5'"),
    (["--warmup-epochs", "0"], "--warmup-epochs: must be positive"),
])
def test_bad_training_flags_get_one_line(args, fragment, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", *args])
    assert exit_info.value.code == 2
    err = captured(capsys)[1]
    assert len(err.strip().splitlines()) == 1 and fragment in err, err


def _args(**given) -> Namespace:
    values = {"schedule": None, "step_size": None, "gamma": None, "weight_decay": None, "early_stopping": None,
              "epochs": 10, "warmup_epochs": None, "label_smoothing": None, "nesterov": None}
    return Namespace(**{**values, **given})


@pytest.mark.parametrize("given, expected", [
    ({}, {"schedule": "none", "step_size": None, "gamma": None, "t_max": None}),
    ({"schedule": "step"}, {"schedule": "step", "step_size": 3, "gamma": 0.1, "t_max": None}),
    ({"schedule": "step", "epochs": 2}, {"schedule": "step", "step_size": 1, "gamma": 0.1, "t_max": None}),
    ({"schedule": "step", "step_size": 4, "gamma": 0.5}, {"schedule": "step", "step_size": 4, "gamma": 0.5,
                                                          "t_max": None}),
    ({"schedule": "cosine", "early_stopping": 2}, {"schedule": "cosine", "step_size": None, "gamma": None,
                                                   "t_max": 10, "early_stopping": 2}),
])
def test_settings_of_a_new_run(given, expected) -> None:
    settings = train_settings.settings(_args(**given))
    assert {k: settings[k] for k in expected} == expected
    model = xpcnn.models.build("seed-simple")
    schedule = train_settings.build_schedule(settings, xpcnn.optim.SGD(model, 1.0))
    kind = {"none": type(None), "step": xpcnn.optim.StepLR, "cosine": xpcnn.optim.CosineAnnealingLR}
    assert isinstance(schedule, kind[expected["schedule"]])


@pytest.mark.parametrize("given", [{"step_size": 2}, {"gamma": 0.5}, {"schedule": "cosine", "gamma": 0.5}])
def test_step_flags_need_the_step_schedule(given) -> None:
    with pytest.raises(ValueError, match="applies to --schedule step only"):
        train_settings.settings(_args(**given))


def test_early_stopping_counts_on_after_a_resume() -> None:
    trainer = small_trainer(progress=False)
    trainer.history = [{"epoch": 1, "val_loss": 1.0}, {"epoch": 2, "val_loss": 1.5}, {"epoch": 3, "val_loss": 1.2}]
    trainer.epoch = 3
    stopper = EarlyStopping(patience=2)
    history = trainer.fit(synthetic(), synthetic(seed=1), epochs=3 + 5, callbacks=[stopper])
    assert len(history) == 3  # the two epochs after the best ran out of patience already: nothing trains
    assert stopper.stopped_epoch == 3 and stopper.best_epoch == 1
    assert stopper.message() == ("early stopping: val_loss has not improved for 2 epochs (best 1.0000 at epoch 1); "
                                 "stopped after epoch 3")
    more = EarlyStopping(patience=3)  # one more epoch of patience: one more epoch, then (no better loss) a stop
    trainer.history[0]["val_loss"] = 0.0
    trainer.fit(synthetic(), synthetic(seed=1), epochs=3 + 5, callbacks=[more])
    assert len(trainer.history) == 4 and more.stopped_epoch == 4


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "XPCNN_KERNELS": "0"}  # the command's logic is under test here, not the kernels
    return subprocess.run([sys.executable, "-m", "xpcnn.cli.main", *args], capture_output=True, text=True,
                          timeout=600, env=env)


def _history(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory, mnist_dir) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    """Short seed-simple runs of ``xpcnn train`` with the new flags, and their resumptions (once per module)."""
    data = ["--model", "seed-simple", "--data-dir", str(mnist_dir), "--dataset", "mnist", "--split-test-set", "8000",
            "--limit-train", "512", "--batch-size", "64", "--no-progress"]
    runs = {}
    step = tmp_path_factory.mktemp("step")
    runs["step"] = step, _cli("train", *data, "--epochs", "2", "--optimizer", "sgd", "--lr", "0.05",
                              "--schedule", "step", "--step-size", "1", "--gamma", "0.5", "--weight-decay", "0.001",
                              "--out", str(step))
    runs["step-resumed"] = step, _cli("train", *data, "--epochs", "3", "--resume", str(step / "last.npz"),
                                      "--out", str(step))
    runs["step-conflict"] = step, _cli("train", *data, "--epochs", "4", "--resume", str(step / "last.npz"),
                                       "--out", str(step), "--schedule", "cosine")
    # Adam at lr 1e-30 leaves float32 weights exactly as they are: val_loss never improves after epoch 1
    stop = tmp_path_factory.mktemp("stop")
    runs["stop"] = stop, _cli("train", *data, "--epochs", "6", "--lr", "1e-30", "--early-stopping", "2",
                              "--out", str(stop))
    runs["stop-resumed"] = stop, _cli("train", *data, "--epochs", "6", "--resume", str(stop / "last.npz"),
                                      "--out", str(stop))
    runs["stop-more-patience"] = stop, _cli("train", *data, "--epochs", "6", "--resume", str(stop / "last.npz"),
                                            "--out", str(stop), "--early-stopping", "4")
    return runs


def test_cli_step_schedule_and_weight_decay(cli_runs) -> None:
    out, result = cli_runs["step"]
    assert result.returncode == 0, result.stderr
    assert "StepLR every epoch x0.5, weight decay 0.001" in result.stderr
    epoch_lines = [line for line in result.stderr.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in epoch_lines] == ["epoch 1/2", "epoch 2/2"]
    assert all("val_loss" in line and "img/s" in line for line in epoch_lines)
    resumed_out, resumed = cli_runs["step-resumed"]
    assert resumed.returncode == 0, resumed.stderr
    assert [record["lr"] for record in _history(out)] == pytest.approx([0.05, 0.025, 0.0125])
    meta = load_checkpoint(out / "last.npz").meta
    assert meta["training"]["schedule"] == "step" and meta["training"]["step_size"] == 1
    assert meta["training"]["gamma"] == 0.5 and meta["schedule"]["epoch"] == 3
    assert meta["optimizer"]["type"] == "SGD" and meta["optimizer"]["hyperparameters"]["weight_decay"] == 0.001


def test_cli_refuses_to_change_the_schedule_on_resume(cli_runs) -> None:
    _, result = cli_runs["step-conflict"]
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--schedule cosine differs from the run in" in lines[0], result.stderr


def test_cli_early_stopping(cli_runs) -> None:
    out, result = cli_runs["stop"]
    assert result.returncode == 0, result.stderr
    assert ("early stopping: val_loss has not improved for 2 epochs (best" in result.stderr
            and "at epoch 1); stopped after epoch 3 of 6" in result.stderr), result.stderr
    _, resumed = cli_runs["stop-resumed"]
    assert resumed.returncode == 0, resumed.stderr
    assert "stopped after epoch 3 of 6; nothing left to resume" in resumed.stderr
    _, more = cli_runs["stop-more-patience"]
    assert more.returncode == 0, more.stderr
    assert "has not improved for 4 epochs" in more.stderr and "stopped after epoch 5 of 6" in more.stderr
    assert [record["epoch"] for record in _history(out)] == [1, 2, 3, 4, 5]
    assert load_checkpoint(out / "last.npz").meta["training"]["early_stopping"] == 4


# -- 5. plots ------------------------------------------------------------------------------------------
def test_history_plot_has_whole_epoch_ticks_and_a_title(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from xpcnn.training import plots
    history = [{"epoch": e, "loss": 1.0 / e, "accuracy": 0.5 + e / 10, "val_loss": 1.2 / e, "val_accuracy": 0.5}
               for e in (1, 2, 3)]
    fig = plots.history_figure(history, model="mnist-cnn", dataset="fashion-mnist")
    try:
        fig.canvas.draw()
        assert fig.get_suptitle() == "mnist-cnn on fashion-mnist"
        for ax in fig.axes:
            low, high = ax.get_xlim()
            ticks = [t for t in ax.get_xticks() if low <= t <= high]
            assert ticks and all(float(t).is_integer() for t in ticks), ticks
    finally:
        plt.close(fig)
    untitled = plots.history_figure(history)  # Python users may leave the names out
    assert untitled.get_suptitle() == ""
    plt.close(untitled)
    assert plots.plot_history(history, tmp_path / "h.png", model="lenet5", dataset="mnist").stat().st_size > 0
    assert plots.plot_recall([0.9] * 10, [str(d) for d in range(10)], tmp_path / "r.png", model="lenet5",
                             dataset="mnist").stat().st_size > 0


# -- 6. the progress bar fits 80 columns ----------------------------------------------------------------
@pytest.mark.parametrize("epoch, epochs, n, total, elapsed, loss, acc, speed", [
    (3, 10, 844, 1875, 5.0, 0.1234, 0.965, 4903.0),        # MNIST at batch 32
    (99, 99, 9999, 99999, 59.0, 9.9999, 1.0, 99999.0),    # long runs, a slow start, a high loss, a fast GPU
    (1, 3, 0, 313, 0.0, float("nan"), 0.0, 0.0),         # before the first step
])
@pytest.mark.parametrize("ncols", [79, 80])  # tqdm draws one column short of the terminal's width
def test_progress_bar_line_fits_80_columns(epoch, epochs, n, total, elapsed, loss, acc, speed, ncols) -> None:
    from tqdm import tqdm
    postfix = bar_postfix(loss, acc, speed)
    line = tqdm.format_meter(n, total, elapsed, ncols=ncols, prefix=f"epoch {epoch}/{epochs}", unit="batch",
                             bar_format=BAR_FORMAT, postfix=postfix)
    assert len(line) <= ncols, line
    assert line.endswith(", " + postfix + "]"), line  # the metrics are complete, not cut off
    assert re.search(r"\|.+\|", line), line  # with a bar


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_progress_bar_in_an_80_column_terminal() -> None:
    """A real fit in a child process whose stderr is an 80x24 terminal: every frame of the bar fits."""
    import fcntl
    import pty
    import struct
    import termios
    script = ("import numpy as np, xpcnn\n"
              "from xpcnn.data.datasets import Split\n"
              "rng = np.random.default_rng(0)\n"
              "split = Split(rng.integers(0, 256, (3000, 28, 28), dtype=np.uint8), "
              "rng.integers(0, 10, 3000).astype(np.int64))\n"
              "model = xpcnn.models.build('seed-simple')\n"
              "xpcnn.Trainer(model, xpcnn.optim.SGD(model, 0.01)).fit(split, epochs=1, batch_size=8)\n")
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                            env={**os.environ, "XPCNN_KERNELS": "0", "COLUMNS": "80"})
    os.close(slave)
    chunks = []
    try:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(master)
        proc.wait(timeout=300)
    text = b"".join(chunks).decode("utf-8", "replace")
    assert proc.returncode == 0, text
    frames = [re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", frame) for frame in re.split(r"[\r\n]", text)]
    bars = [frame for frame in frames if "%|" in frame]
    assert bars, text
    assert all(len(frame) <= 80 for frame in bars), [frame for frame in bars if len(frame) > 80]
    assert any(re.search(r"loss \d+\.\d{4} acc \d\.\d{4} \d+ img/s\]$", frame) for frame in bars), bars
    assert any(frame.startswith("epoch 1/1: loss ") for frame in frames)


# -- 7. colour images ----------------------------------------------------------------------------------
def test_normalize_takes_grey_and_colour_images() -> None:
    grey = synthetic(4, 8).images
    colour = synthetic(4, 8, channels=3).images
    x = normalize(grey, 0.5, 0.25)
    assert x.shape == (4, 1, 8, 8) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 0], (grey / 255.0 - 0.5) / 0.25, rtol=0, atol=1e-5)
    y = normalize(colour, 0.5, 0.25)
    assert y.shape == (4, 3, 8, 8) and y.dtype == np.float32
    np.testing.assert_allclose(y, (colour / 255.0 - 0.5) / 0.25, rtol=0, atol=1e-5)


@pytest.mark.parametrize("shape, fragment", [
    ((4, 32, 32, 3), "are channel-last (N, H, W, 3); xpcnn takes (N, 3, H, W): pass images.transpose(0, 3, 1, 2), "
                     "shape (4, 3, 32, 32)"),
    ((4, 28, 28, 1), "pass images.transpose(0, 3, 1, 2), shape (4, 1, 28, 28)"),
    ((28, 28), "for one image pass images[None]"),
    ((2, 2, 3, 28, 28), "expected images (N, H, W) or (N, C, H, W)"),
])
def test_normalize_explains_bad_layouts(shape, fragment) -> None:
    with pytest.raises(ShapeError) as info:
        normalize(np.zeros(shape, np.uint8), 0.5, 0.25)
    assert fragment in str(info.value) and "\n" not in str(info.value), str(info.value)


def colour_model(channels: int = 3) -> xpcnn.Sequential:
    return xpcnn.Sequential([Conv2D(channels, 4, 3, seed=0), ReLU(), MaxPool2D(2), Flatten(),
                             Dense(4 * 5 * 5, 10, seed=1)])


def test_trainer_trains_on_colour_images() -> None:
    model = colour_model()
    trainer = Trainer(model, xpcnn.optim.Adam(model, 1e-2), progress=False)
    train, val = synthetic(64, 12, channels=3), synthetic(32, 12, channels=3, seed=1)
    history = trainer.fit(train, val, epochs=2, batch_size=16)
    assert all(np.isfinite(record["loss"]) and np.isfinite(record["val_loss"]) for record in history)
    assert sum(sum(row) for row in trainer.evaluate(val)["confusion_matrix"]) == 32
    probabilities = trainer.predict(val.images[:5])
    assert probabilities.shape == (5, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("model_channels, images, fragment", [
    (3, synthetic(8, 12), "layer 0 (Conv2D) expects 3 input channels, but the images have 1 (shape (N, H, W), "
                          "grey); pass (N, 3, H, W) images, or build the model for 1-channel input (Conv2D(1, ...)"),
    (1, synthetic(8, 12, channels=3), "layer 0 (Conv2D) expects 1 input channel, but the images have 3 "
                                      "(shape (8, 3, 12, 12)); pass (N, 1, H, W) images"),
])
def test_trainer_names_both_channel_counts(model_channels, images, fragment) -> None:
    model = colour_model(model_channels)
    trainer = Trainer(model, xpcnn.optim.Adam(model), progress=False)
    for attempt in (lambda: trainer.fit(images), lambda: trainer.evaluate(images),
                    lambda: trainer.predict(images.images)):
        with pytest.raises(ShapeError) as info:
            attempt()
        assert fragment in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_trainer_refuses_channel_last_images() -> None:
    split = synthetic(8, 12, channels=3)
    split.images = np.ascontiguousarray(split.images.transpose(0, 2, 3, 1))  # (8, 12, 12, 3)
    model = colour_model()
    trainer = Trainer(model, xpcnn.optim.Adam(model), progress=False)
    with pytest.raises(ShapeError, match=re.escape("xpcnn takes (N, 3, H, W): pass images.transpose(0, 3, 1, 2)")):
        trainer.fit(split)
    with pytest.raises(ShapeError, match="channel-last"):
        trainer.predict(split.images)


def test_save_refuses_what_is_not_a_file_and_names_the_target(tmp_path) -> None:
    """model.save never replaces a folder or a device (its atomic rename would), and a write that fails
    names the file asked for, not the temporary one."""
    import os

    model = xpcnn.models.build("seed-simple")
    folder = tmp_path / "adir"
    folder.mkdir()
    with pytest.raises(ValueError, match="is not a regular file"):
        model.save(folder)
    assert folder.is_dir()
    if hasattr(os, "mkfifo"):  # a special file, as /dev/full would be (never risk a real device here)
        fifo = tmp_path / "pipe"
        os.mkfifo(fifo)
        with pytest.raises(ValueError, match="is not a regular file"):
            model.save(fifo)
        assert not fifo.is_file() and fifo.exists()
    blocked = tmp_path / "file"
    blocked.write_text("a file where a folder should be")
    with pytest.raises(OSError, match=f"cannot write {blocked / 'm.npz'}"):
        model.save(blocked / "m.npz")


@pytest.mark.parametrize("given, expected", [
    ({"schedule": "warmup-cosine"}, {"warmup_epochs": 1, "warmup_steps": 7, "total_steps": 70, "pct_start": None}),
    ({"schedule": "warmup-cosine", "warmup_epochs": 3}, {"warmup_steps": 21, "total_steps": 70}),
    ({"schedule": "onecycle"}, {"warmup_epochs": None, "total_steps": 70, "pct_start": 0.3}),
    ({"schedule": "onecycle", "warmup_epochs": 2, "label_smoothing": 0.1},
     {"pct_start": 0.2, "total_steps": 70, "label_smoothing": 0.1}),
])
def test_settings_of_a_per_batch_schedule(given, expected) -> None:
    settings = train_settings.settings(_args(**given), batches_per_epoch=7)
    assert {k: settings[k] for k in expected} == expected
    schedule = train_settings.build_schedule(settings, xpcnn.optim.SGD(xpcnn.models.build("seed-simple"), 1.0))
    assert schedule.interval == "batch" and schedule.total_steps == 70


@pytest.mark.parametrize("given, fragment", [
    ({"schedule": "cosine", "warmup_epochs": 2}, "--warmup-epochs applies to --schedule warmup-cosine and onecycle"),
    ({"schedule": "onecycle", "warmup_epochs": 10}, "--warmup-epochs 10 must be below --epochs 10"),
    ({"schedule": "warmup-cosine", "epochs": 1}, "warms up for 1 epoch(s): pass --epochs 2 or more"),
])
def test_warmup_flags_are_checked(given, fragment) -> None:
    with pytest.raises(ValueError, match=re.escape(fragment)):
        train_settings.settings(_args(**given), batches_per_epoch=7)


def test_cli_trains_resnet20_with_the_speed_run_settings(tmp_path: Path, mnist_dir: Path) -> None:
    """resnet20 is built for the data's shape; onecycle, Nesterov and label smoothing are recorded, and a resume
    past the schedule's end is refused in one line."""
    out = tmp_path / "run"
    data = ["--model", "resnet20", "--data-dir", str(mnist_dir), "--dataset", "mnist", "--split-test-set", "8000",
            "--limit-train", "64", "--batch-size", "32", "--no-progress", "--out", str(out)]
    result = _cli("train", *data, "--epochs", "1", "--optimizer", "sgd", "--lr", "0.1", "--nesterov",
                  "--label-smoothing", "0.1", "--schedule", "onecycle")
    assert result.returncode == 0, result.stderr
    assert "OneCycleLR over 2 steps (pct_start 0.3), Nesterov momentum, label smoothing 0.1" in result.stderr
    meta = load_checkpoint(out / "last.npz").meta
    assert meta["training"]["schedule"] == "onecycle" and meta["training"]["total_steps"] == 2
    assert meta["training"]["label_smoothing"] == 0.1 and meta["optimizer"]["hyperparameters"]["nesterov"] is True
    assert meta["model_config"]["layers"][0]["in_channels"] == 1 and meta["schedule"]["epoch"] == 2
    more = _cli("train", "--resume", str(out / "last.npz"), "--epochs", "2", "--no-progress")
    lines = [line for line in more.stderr.splitlines() if line.strip()]
    assert more.returncode == 2 and len(lines) == 1, more.stderr
    assert "--epochs 2 goes past the onecycle schedule in" in lines[0] and "resume with --epochs 1 at most" in lines[0]
