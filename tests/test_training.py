"""Training on real digits, exact resume, crash-safe and code-free checkpoints, device moves."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import xpcnn
from xpcnn import backend as B
from xpcnn.checkpoint import load_checkpoint, save_checkpoint
from xpcnn.data import datasets
from xpcnn.errors import CheckpointError
from xpcnn.data.datasets import Split
from xpcnn.training import ModelCheckpoint, Trainer


@pytest.fixture(scope="module")
def digits(mnist_dir):
    test = datasets.load_test_only("mnist", mnist_dir)
    return test.take(0, 3000), test.take(8000)


def test_short_run_on_real_digits_learns(digits) -> None:
    """seed-deep on 3,000 real MNIST digits for 2 epochs must reach 90% on 2,000 held-out digits."""
    train, test = digits
    model = xpcnn.models.build("seed-deep")
    trainer = Trainer(model, xpcnn.optim.Adam(model, 1e-3), progress=False)
    history = trainer.fit(train, test, epochs=2, batch_size=32)
    assert history[-1]["val_accuracy"] >= 0.90
    result = trainer.evaluate(test)
    assert result["accuracy"] == pytest.approx(history[-1]["val_accuracy"])
    assert np.sum(result["confusion_matrix"]) == 2000 and len(result["per_class_recall"]) == 10


def _trainer(seed=0):
    model = xpcnn.models.build("mnist-cnn", seed=seed)  # has dropout: its RNG state must resume too
    return Trainer(model, xpcnn.optim.Adam(model, 1e-3), progress=False, seed=seed)


def test_resume_is_bit_identical(digits, tmp_path: Path) -> None:
    train = digits[0].take(0, 384)
    straight = _trainer()
    straight.fit(train, epochs=2, batch_size=64)

    first = _trainer()
    first.fit(train, epochs=1, batch_size=64, callbacks=[ModelCheckpoint(tmp_path)])
    resumed = _trainer(seed=5)  # different seed and weights: everything must come from the checkpoint
    checkpoint = load_checkpoint(tmp_path / "last.npz")
    resumed.model.load_state_dict(checkpoint.model_state)
    resumed.restore(checkpoint)
    resumed.fit(train, epochs=2, batch_size=64)
    for key, value in straight.model.state_dict().items():
        assert np.array_equal(B.to_numpy(resumed.model.state_dict()[key]), B.to_numpy(value)), key
    assert resumed.optimizer.step_count == straight.optimizer.step_count


def test_checkpoint_killed_mid_write_leaves_previous_intact(tmp_path: Path) -> None:
    path = tmp_path / "last.npz"
    model = xpcnn.models.build("seed-deep", seed=1)
    save_checkpoint(path, model, meta={"marker": "previous"})
    script = textwrap.dedent(f"""
        import os, time, numpy as np, xpcnn
        from xpcnn.checkpoint import save_checkpoint
        real = np.savez
        def slow_savez(handle, **arrays):
            handle.write(b"partial bytes of a torn write")
            handle.flush()
            print("writing", flush=True)
            time.sleep(60)
        np.savez = slow_savez
        save_checkpoint({str(path)!r}, xpcnn.models.build("seed-deep", seed=2), meta={{"marker": "new"}})
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.kill()
    proc.wait()
    checkpoint = load_checkpoint(path)
    assert checkpoint.meta["marker"] == "previous"
    restored = checkpoint.build_model()
    np.testing.assert_array_equal(restored.state_dict()["0.weight"], model.state_dict()["0.weight"])


def test_crafted_checkpoint_cannot_run_code(evil_checkpoint) -> None:
    path, marker = evil_checkpoint
    with pytest.raises(CheckpointError, match="not a readable xpcnn checkpoint"):
        load_checkpoint(path)
    assert not marker.exists()


def test_garbage_and_missing_checkpoints(tmp_path: Path) -> None:
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(tmp_path / "junk.npz")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.npz")


def test_checkpoint_into_wrong_architecture_names_tensors(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "simple.npz", xpcnn.models.build("seed-simple"))
    with pytest.raises(CheckpointError, match=r"0\.weight: model has \(8, 1, 5, 5\), state has \(8, 1, 3, 3\)"):
        xpcnn.models.build("seed-deep").load_state_dict(load_checkpoint(tmp_path / "simple.npz").model_state)


@pytest.mark.parametrize("device, library", [("cpu", "torch"), ("device1", "array_api_strict"), ("cpu", "jax")])
def test_moved_model_predicts_the_same(digits, device, library) -> None:
    backend = library
    pytest.importorskip(backend)
    train, test = digits
    model = xpcnn.models.build("seed-deep")
    trainer = Trainer(model, xpcnn.optim.Adam(model, 1e-3), progress=False)
    trainer.fit(train.take(0, 1000), epochs=1, batch_size=50)
    before = trainer.predict(test.images[:300])
    moved = Trainer(model, xpcnn.optim.Adam(model, 1e-3), device=device, backend=backend, progress=False)
    after = moved.predict(test.images[:300])
    assert B.placement_of(model.parameters()[0]).backend == backend
    np.testing.assert_array_equal(after.argmax(1), before.argmax(1))
    np.testing.assert_allclose(after, before, atol=1e-5)


def test_early_stopping_stops(digits) -> None:
    from xpcnn.training import EarlyStopping

    class Worsening:  # a monitor that never improves after the first epoch
        def __init__(self):
            self.calls = 0

        def on_epoch_end(self, trainer, record):
            self.calls += 1
            record["fake_loss"] = float(self.calls)

        def on_interrupt(self, trainer):
            pass
    model = xpcnn.models.build("seed-simple")
    trainer = Trainer(model, xpcnn.optim.SGD(model, 0.01), progress=False)
    history = trainer.fit(digits[0].take(0, 64), epochs=10, batch_size=32,
                          callbacks=[Worsening(), EarlyStopping("fake_loss", patience=2)])
    assert len(history) == 3  # best at epoch 1, then two epochs without improvement


def test_ctrl_c_saves_and_exits_cleanly(mnist_dir, tmp_path: Path) -> None:
    import signal
    import time
    out = tmp_path / "run"
    args = ["train", "--data-dir", str(mnist_dir), "--split-test-set", "8000", "--epochs", "50", "--out", str(out),
            "--no-progress"]
    # A shell's background job inherits SIGINT as ignored; the child restores Python's handler itself
    # (no preexec_fn: forking a process that runs JAX threads can deadlock).
    launcher = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                f"from xpcnn.cli.main import main; sys.exit(main({args!r}))")
    proc = subprocess.Popen([sys.executable, "-c", launcher], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 300
    while not (out / "history.jsonl").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)  # now in the middle of epoch 2
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted: progress saved" in err
    checkpoint = load_checkpoint(out / "last.npz")
    assert checkpoint.meta["trainer"]["epoch"] >= 1
    assert checkpoint.build_model().state_dict()["0.weight"].shape == (8, 1, 5, 5)
    # The interrupt acted at a step boundary: every optimizer step the weights hold is counted, so a resume
    # replays no batch (a Ctrl-C inside a step used to save one step more than it counted).
    assert checkpoint.meta["optimizer"]["step"] == checkpoint.meta["trainer"]["global_step"]


def test_sigterm_saves_and_exits_like_ctrl_c(mnist_dir, tmp_path: Path) -> None:
    """SIGTERM (a scheduler stopping the job) saves last.npz at the step boundary, as Ctrl-C does."""
    import signal
    import time
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "xpcnn.cli.main", "train", "--dataset", "mnist-sample", "--epochs",
                             "50", "--out", str(out), "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 300
    while not (out / "history.jsonl").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)  # in the middle of epoch 2
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted: progress saved" in err
    checkpoint = load_checkpoint(out / "last.npz")
    assert checkpoint.meta["optimizer"]["step"] == checkpoint.meta["trainer"]["global_step"] > 0


def test_ctrl_c_waits_for_the_step_to_end(digits) -> None:
    """A SIGINT arriving inside a step is acted on once the step is whole and counted."""
    import os
    import signal
    model = xpcnn.models.build("seed-simple")
    optimizer = xpcnn.optim.SGD(model, 0.01)
    trainer = Trainer(model, optimizer, progress=False)
    step = optimizer.step

    def step_then_signal() -> None:
        step()
        if optimizer.step_count == 3:
            os.kill(os.getpid(), signal.SIGINT)  # lands after the update, before the step is counted
    optimizer.step = step_then_signal
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(digits[0].take(0, 320), epochs=1, batch_size=32)
    assert optimizer.step_count == trainer.global_step == 3
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored after fit
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_resumed_run_keeps_a_better_earlier_best(digits, tmp_path: Path) -> None:
    """After --resume, best.npz is replaced only by an epoch better than every earlier one."""
    model = xpcnn.models.build("seed-simple")
    trainer = Trainer(model, xpcnn.optim.SGD(model, 0.01), progress=False)
    trainer.history = [{"epoch": 1, "val_accuracy": 0.99}]  # as restored from a checkpoint
    trainer.epoch = 1
    save_checkpoint(tmp_path / "best.npz", model, meta={"marker": "earlier best"})
    trainer.fit(digits[0].take(0, 64), digits[1].take(0, 64), epochs=2, batch_size=32,
                callbacks=[ModelCheckpoint(tmp_path)])
    assert trainer.history[-1]["val_accuracy"] < 0.99
    assert load_checkpoint(tmp_path / "best.npz").meta["marker"] == "earlier best"


def test_one_shuffled_batch_of_the_whole_set_keeps_its_order(digits) -> None:
    from xpcnn.data.batches import DeviceData
    split = digits[0].take(0, 50)
    data = DeviceData(split, B.resolve("cpu"), 0.0, 1.0)
    (x, y), = list(data.batches(64, shuffle_seed=(0, 0)))
    order = B.random.permutation_host(50, 0, 0)
    np.testing.assert_array_equal(y, split.labels[order])


def _residual_trainer(schedule: str, seed: int = 0) -> Trainer:
    """A small residual net with dropout inside its block (a nested dropout stream) and a per-batch schedule."""
    from xpcnn import layers as L
    L.manual_seed(seed)
    model = xpcnn.Sequential([L.Conv2D(1, 4, 3, stride=2), L.BatchNorm2D(4), L.ReLU(),
                              L.Residual([L.Conv2D(4, 4, 3, padding=1), L.Dropout(0.3, seed=7 + seed), L.GELU()]),
                              L.GlobalAvgPool2D(), L.Flatten(), L.Dense(4, 10)])
    optimizer = xpcnn.optim.SGD(model, lr=0.1, momentum=0.9, nesterov=True)
    make = {"onecycle": lambda: xpcnn.optim.OneCycleLR(optimizer, total_steps=12),
            "warmup-cosine": lambda: xpcnn.optim.WarmupCosineLR(optimizer, warmup_steps=3, total_steps=12)}[schedule]
    return Trainer(model, optimizer, xpcnn.losses.SoftmaxCrossEntropy(label_smoothing=0.1), progress=False,
                   seed=seed, schedule=make())


@pytest.mark.parametrize("schedule", ["onecycle", "warmup-cosine"])
def test_resume_with_a_per_batch_schedule_and_nested_dropout_is_bit_identical(schedule, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    train = Split(rng.integers(0, 256, (96, 12, 12), dtype=np.uint8), rng.integers(0, 10, 96))
    straight = _residual_trainer(schedule)
    straight.fit(train, epochs=2, batch_size=16)
    assert straight.schedule.epoch == 12 and straight.history[-1]["lr"] < straight.history[0]["lr"]
    first = _residual_trainer(schedule)
    first.fit(train, epochs=1, batch_size=16, callbacks=[ModelCheckpoint(tmp_path)])
    checkpoint = load_checkpoint(tmp_path / "last.npz")
    assert checkpoint.meta["trainer"]["dropout_streams"] == {"3.block.1": [7, 6]}
    assert checkpoint.meta["schedule"]["epoch"] == 6
    resumed = _residual_trainer(schedule, seed=5)  # other weights, dropout seed and schedule progress
    resumed.restore(checkpoint)
    resumed.fit(train, epochs=2, batch_size=16)
    for key, value in straight.model.state_dict().items():
        assert np.array_equal(B.to_numpy(resumed.model.state_dict()[key]), B.to_numpy(value)), key
    assert resumed.optimizer.lr == straight.optimizer.lr and resumed.optimizer.momentum == straight.optimizer.momentum


def test_fit_refuses_a_per_batch_schedule_shorter_than_the_run() -> None:
    rng = np.random.default_rng(0)
    train = Split(rng.integers(0, 256, (96, 12, 12), dtype=np.uint8), rng.integers(0, 10, 96))
    trainer = _residual_trainer("onecycle")
    with pytest.raises(ValueError, match=r"OneCycleLR has total_steps=12, but training to epoch 3 takes 18 steps "
                                         r"\(6 batches per epoch\); build it with total_steps=18"):
        trainer.fit(train, epochs=3, batch_size=16)
