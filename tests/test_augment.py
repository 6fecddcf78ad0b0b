"""Augmentation on the device (xpcnn/data/augment.py): exact crops, flips and cutout on every backend, draws
that depend on (seed, epoch, batch) only, the flip rate, policies, and a resumed run that augments exactly as an
uninterrupted one."""

from __future__ import annotations

import numpy as np
import pytest

from xpcnn.data import augment as A
from xpcnn.errors import ShapeError


def batch(n: int = 6, c: int = 3, h: int = 7, w: int = 9) -> np.ndarray:
    """Distinct values everywhere, so any misplaced pixel shows."""
    return np.arange(1, n * c * h * w + 1, dtype=np.float32).reshape(n, c, h, w)


def reference_crop(images: np.ndarray, top: np.ndarray, left: np.ndarray, size: tuple[int, int], padding: int,
                   mode: str) -> np.ndarray:
    """np.pad, then one slice per image: what RandomCrop must compute."""
    padded = np.pad(images, ((0, 0), (0, 0), (padding, padding), (padding, padding)), mode=mode)
    return np.stack([padded[i, :, t:t + size[0], s:s + size[1]] for i, (t, s) in enumerate(zip(top, left))])


@pytest.mark.parametrize("mode", A.PADDING_MODES)
@pytest.mark.parametrize(("size", "padding"), [(None, 2), (5, 2), ((4, 8), 2), ((11, 13), 2), ((2, 2), 5)])
def test_crop_matches_padding_then_slicing(backend, mode: str, size, padding: int) -> None:
    x = batch(40)  # (2, 2) windows of images padded by 5: some lie wholly in the padding
    crop = A.RandomCrop(size, padding=padding, padding_mode=mode)
    out = backend.numpy(crop(backend.asarray(x), (3, 1, 4)))
    top, left = crop.offsets((3, 1, 4), 40, 7, 9)
    hw = crop.output_size(7, 9)
    assert out.shape == (40, 3, *hw) and out.dtype == np.float32
    np.testing.assert_array_equal(out, reference_crop(x, top, left, hw, padding, mode))


def test_the_numpy_kernel_equals_the_reference_gather() -> None:
    from xpcnn.ops.crop import crop_windows
    x = np.random.default_rng(1).standard_normal((64, 3, 12, 10))
    crop = A.RandomCrop((6, 7), padding=6)
    top, left = crop.offsets((0, 0, 0), 64, 12, 10)
    args = (x, top, left, (6, 7), 6, "constant")
    np.testing.assert_array_equal(crop_windows(*args), crop_windows.reference(*args))
    assert crop_windows(*args).dtype == np.float64


def test_crop_of_a_known_image_at_a_known_offset(backend) -> None:
    x = batch(1, 1, 3, 3)  # [[1 2 3] [4 5 6] [7 8 9]]
    crop = A.RandomCrop(padding=1)
    key = next(k for k in ((0, 0, b) for b in range(100)) if tuple(crop.offsets(k, 1, 3, 3)) == (0, 2))
    out = backend.numpy(crop(backend.asarray(x), key))  # one row down, one column left: zeros enter top-right
    np.testing.assert_array_equal(out[0, 0], [[0, 0, 0], [2, 3, 0], [5, 6, 0]])


def test_flip_mirrors_exactly_the_drawn_images(backend) -> None:
    x = batch(16)
    flip = A.RandomHorizontalFlip(0.5)
    out = backend.numpy(flip(backend.asarray(x), (0, 2, 5)))
    flipped = flip.flips((0, 2, 5), 16)
    assert 0 < flipped.sum() < 16
    np.testing.assert_array_equal(out[flipped], x[flipped][..., ::-1])
    np.testing.assert_array_equal(out[~flipped], x[~flipped])


def test_cutout_zeroes_one_clipped_square_per_image(backend) -> None:
    x = batch(8, 2, 10, 12)
    cut = A.Cutout(4)
    out = backend.numpy(cut(backend.asarray(x), (1, 0, 0)))
    cy, cx = cut.centres((1, 0, 0), 8, 10, 12)
    expected = x.copy()
    for i in range(8):
        top, left = max(cy[i] - 2, 0), max(cx[i] - 2, 0)
        expected[i, :, top:cy[i] + 2, left:cx[i] + 2] = 0
    np.testing.assert_array_equal(out, expected)


def test_float64_batches_stay_float64(backend) -> None:
    x = backend.asarray(batch().astype(np.float64))
    out = A.Compose([A.RandomCrop(padding=2), A.RandomHorizontalFlip(), A.Cutout(3)])(x, (0, 0, 0))
    assert out.dtype == x.dtype and tuple(out.shape) == (6, 3, 7, 9)


def test_same_key_same_result_on_every_backend(backend) -> None:
    """The draws are made on the host from the key alone: every backend gives NumPy's result, bit for bit."""
    x = np.random.default_rng(0).standard_normal((32, 3, 16, 16)).astype(np.float32)
    policy = A.policy("crop-reflect:3+flip+cutout:5", 16, 16)
    expected = policy(x, (7, 2, 11))
    np.testing.assert_array_equal(backend.numpy(policy(backend.asarray(x), (7, 2, 11))), expected)


def test_draws_depend_on_seed_epoch_and_batch() -> None:
    x = np.random.default_rng(0).standard_normal((64, 1, 12, 12)).astype(np.float32)
    policy = A.policy("crop+flip", 12, 12)
    keys = [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1)]
    outs = [policy(x, key) for key in keys]
    np.testing.assert_array_equal(policy(x, (0, 0, 0)), outs[0])
    for i in range(len(outs)):
        for j in range(i):
            assert not np.array_equal(outs[i], outs[j]), (keys[i], keys[j])


def test_each_part_of_a_policy_draws_its_own_numbers() -> None:
    crop = A.RandomCrop(padding=4)
    flip = A.RandomHorizontalFlip()
    top, _ = crop.offsets((0, 0, 0, 0), 1000, 32, 32)
    flips = flip.flips((0, 0, 0, 1), 1000)
    assert abs(np.corrcoef(top, flips)[0, 1]) < 0.1


@pytest.mark.parametrize("p", [0.0, 0.2, 0.5, 1.0])
def test_flip_rate_is_p(p: float) -> None:
    flip = A.RandomHorizontalFlip(p)
    rate = np.mean([flip.flips((0, 0, b), 500) for b in range(20)])
    assert abs(rate - p) < 0.02  # 10,000 draws: 4.5 standard deviations at p = 0.5


def test_crop_offsets_are_uniform() -> None:
    crop = A.RandomCrop(padding=4)
    top, left = crop.offsets((5, 0, 0), 9000, 32, 32)
    for values in (top, left):
        counts = np.bincount(values, minlength=9)
        assert len(counts) == 9 and counts.min() > 850 and counts.max() < 1150  # 1000 each expected


@pytest.mark.parametrize(("make", "fragment"), [
    (lambda: A.RandomCrop(padding=-1), "non-negative int"),
    (lambda: A.RandomCrop(0), "positive int"),
    (lambda: A.RandomCrop(padding=2, padding_mode="wrap"), "padding_mode must be one of"),
    (lambda: A.RandomHorizontalFlip(1.5), "in [0, 1]"),
    (lambda: A.Cutout(0), "positive int"),
])
def test_bad_arguments_are_one_line(make, fragment: str) -> None:
    with pytest.raises(ValueError, match=None) as info:
        make()
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_impossible_crops_raise_shape_error() -> None:
    with pytest.raises(ShapeError, match="cannot cut 12x12 windows from 7x9 images padded to 9x11"):
        A.RandomCrop(12, padding=1)(batch(), (0, 0, 0))
    with pytest.raises(ShapeError, match="takes at most 6 pixels"):
        A.RandomCrop(padding=7, padding_mode="reflect")(batch(), (0, 0, 0))
    with pytest.raises(ShapeError, match=r"\(N, C, H, W\)"):
        A.RandomHorizontalFlip()(batch()[0], (0, 0, 0))


@pytest.mark.parametrize(("text", "size", "digits", "expected"), [
    ("default", 32, False, "Compose([RandomCrop(size=None, padding=4, padding_mode='constant'), "
                           "RandomHorizontalFlip(p=0.5)])"),
    ("default", 28, True, "Compose([RandomCrop(size=None, padding=2, padding_mode='constant')])"),
    ("crop-reflect:3+cutout", 32, False, "Compose([RandomCrop(size=None, padding=3, padding_mode='reflect'), "
                                         "Cutout(size=16)])"),
    (" Flip+crop ", 28, False, "Compose([RandomHorizontalFlip(p=0.5), RandomCrop(size=None, padding=2, "
                               "padding_mode='constant')])"),
    ("none", 32, False, "None"),
])
def test_policies(text: str, size: int, digits: bool, expected: str) -> None:
    assert repr(A.policy(text, size, size, digits=digits)) == expected


@pytest.mark.parametrize(("text", "fragment"), [
    ("rotate", "unknown augmentation 'rotate'"),
    ("flip:2", "flip takes no number"),
    ("crop:x", "crop takes a non-negative int padding"),
    ("cutout:0", "cutout takes a positive int size"),
    ("crop+crop", "appears twice"),
])
def test_bad_policies_are_one_line(text: str, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        A.parse_policy(text)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_flipping_digits_is_refused() -> None:
    with pytest.raises(ValueError, match="a mirrored digit is another digit or none; drop flip"):
        A.policy("crop+flip", 28, 28, digits=True)


# -- through the Trainer -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits(mnist_dir):
    from xpcnn.data import datasets
    return datasets.load_test_only("mnist", mnist_dir).take(0, 192)


def _train(split, augment, epochs: int = 2, interrupt_at: int | None = None, resume_from=None, out=None):
    """seed-simple, SGD, batch 32 (6 steps an epoch); SIGINT after step ``interrupt_at`` (counted from 1)."""
    import os
    import signal

    import xpcnn
    from xpcnn.checkpoint import load_checkpoint
    from xpcnn.training import ModelCheckpoint, Trainer, TrainingInterrupted
    model = xpcnn.models.build("seed-simple", seed=3)
    optimizer = xpcnn.optim.SGD(model, 0.05, momentum=0.9)
    trainer = Trainer(model, optimizer, seed=5, progress=False, augment=augment)
    if resume_from is not None:
        trainer.restore(load_checkpoint(resume_from))
    if interrupt_at is not None:
        step = optimizer.step

        def step_then_signal() -> None:
            step()
            if optimizer.step_count == interrupt_at:
                os.kill(os.getpid(), signal.SIGINT)  # acted on once the step is counted
        optimizer.step = step_then_signal
        with pytest.raises(TrainingInterrupted):
            trainer.fit(split, epochs=epochs, batch_size=32, callbacks=[ModelCheckpoint(out)])
    else:
        trainer.fit(split, epochs=epochs, batch_size=32)
    return trainer


def test_a_run_resumed_mid_epoch_augments_as_an_uninterrupted_one(digits, tmp_path) -> None:
    augment = A.policy("crop+cutout:6", 28, 28, digits=True)
    whole = _train(digits, augment)
    _train(digits, augment, interrupt_at=9, out=tmp_path)  # step 3 of epoch 2
    from xpcnn.checkpoint import load_checkpoint
    assert load_checkpoint(tmp_path / "last.npz").meta["trainer"]["batch_in_epoch"] == 3
    resumed = _train(digits, augment, resume_from=tmp_path / "last.npz")
    expected, got = whole.model.state_dict(), resumed.model.state_dict()
    assert [name for name in expected if not np.array_equal(np.asarray(expected[name]), np.asarray(got[name]))] == []
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in whole.history]
    plain = _train(digits, None)
    assert not np.array_equal(np.asarray(plain.model.state_dict()["0.weight"]),
                              np.asarray(whole.model.state_dict()["0.weight"]))  # the augmentation took part


def test_augment_sees_each_training_batch_with_its_key(digits) -> None:
    calls = []

    def record(x, key):
        calls.append((tuple(x.shape), key))
        return x
    _train(digits.take(0, 80), record)
    assert calls == [((32 if b < 2 else 16, 1, 28, 28), (5, e, b)) for e in range(2) for b in range(3)]


def test_evaluation_and_prediction_never_augment(digits) -> None:
    import xpcnn
    from xpcnn.training import Trainer

    def refuse(x, key):
        raise AssertionError("augmented outside training")
    model = xpcnn.models.build("seed-simple")
    trainer = Trainer(model, xpcnn.optim.SGD(model, 0.01), progress=False, augment=refuse)
    assert trainer.evaluate(digits)["accuracy"] >= 0
    assert trainer.predict(digits.images[:5]).shape == (5, 10)


def test_augment_must_be_callable() -> None:
    import xpcnn
    from xpcnn.training import Trainer
    with pytest.raises(TypeError, match="augment must be a callable"):
        Trainer(xpcnn.models.build("seed-simple"), augment="crop+flip")


@pytest.mark.parametrize(("text", "size", "digits", "expected"), [
    ("default", 32, False, "crop:4+flip"), ("default", 28, True, "crop:2"), ("DEFAULT", 28, False, "crop:2+flip"),
    ("crop:3+cutout", 32, False, "crop:3+cutout:16"), ("flip+crop-reflect", 64, False, "flip+crop-reflect:4"),
    ("none", 32, False, "none"),
])
def test_resolved_policies_name_every_default(text: str, size: int, digits: bool, expected: str) -> None:
    assert A.resolve_policy(text, size, size, digits) == expected
    assert repr(A.policy(expected, size, size)) == repr(A.policy(text, size, size, digits))


# -- xpcnn train --augment (real processes) ----------------------------------------------------------------------

SAMPLE_RUN = ["train", "--dataset", "mnist-sample", "--model", "seed-simple", "--limit-train", "256",
              "--batch-size", "64", "--epochs", "1", "--no-progress"]


@pytest.fixture(scope="module")
def augmented_run(tmp_path_factory):
    from test_cli import run_cli
    out = tmp_path_factory.mktemp("augmented")
    result = run_cli(*SAMPLE_RUN, "--augment", "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out, result


@pytest.mark.subprocesses
def test_augment_alone_crops_digits_and_is_recorded(augmented_run) -> None:
    from xpcnn.checkpoint import load_checkpoint
    out, result = augmented_run
    assert ", augment crop:2," in result.stderr.splitlines()[0]
    assert load_checkpoint(out / "last.npz").meta["training"]["augment"] == "crop:2"


@pytest.mark.subprocesses
@pytest.mark.parametrize(("args", "fragment"), [
    (["--augment", "crop+flip"], "a mirrored digit is another digit or none; drop flip (e.g. --augment crop)"),
    (["--augment", "rotate"], "argument --augment: unknown augmentation 'rotate' in 'rotate': use default, none"),
    (["--augment", "crop-reflect:30"], "reflect padding of 28x28 images takes at most 27 pixels"),
])
def test_bad_augment_flags_are_one_line(tmp_path, args, fragment: str) -> None:
    from test_cli import assert_one_line_error, run_cli
    assert_one_line_error(run_cli(*SAMPLE_RUN, *args, "--out", str(tmp_path)), fragment)


@pytest.mark.subprocesses
def test_resume_keeps_the_augmentation_and_refuses_another(augmented_run, tmp_path) -> None:
    import shutil

    from test_cli import assert_one_line_error, run_cli
    from xpcnn.checkpoint import load_checkpoint
    out = tmp_path / "run"
    shutil.copytree(augmented_run[0], out)
    last = str(out / "last.npz")
    assert_one_line_error(run_cli("train", "--resume", last, "--augment", "crop:3", "--epochs", "2"),
                          f"--augment crop:3 (crop:3) differs from the run in {last} (augment: crop:2)")
    result = run_cli("train", "--resume", last, "--augment", "--epochs", "2", "--no-progress")  # the same policy
    assert result.returncode == 0, result.stderr
    first_line = next(line for line in result.stderr.splitlines() if line.startswith("training "))
    assert ", augment crop:2," in first_line and "resumed at epoch 2" in first_line
    assert load_checkpoint(out / "last.npz").meta["training"]["augment"] == "crop:2"


def test_a_checkpoint_with_a_bad_policy_is_one_error(augmented_run, tmp_path) -> None:
    from xpcnn.backend import host
    from xpcnn.checkpoint import load_checkpoint
    from xpcnn.errors import CheckpointError
    arrays, header = host.load_arrays(augmented_run[0] / "last.npz")
    header["training"]["augment"] = "rotate:90"
    host.save_arrays(tmp_path / "bad.npz", arrays, header)
    with pytest.raises(CheckpointError, match="header field training.augment: expected an augmentation policy"):
        load_checkpoint(tmp_path / "bad.npz")


#: test_interrupts.py's run (mnist-cnn, with dropout; 2 epochs of 8 steps) with crops and cutout.
INTERRUPTED_RUN = ["train", "--model", "mnist-cnn", "--dataset", "mnist", "--data-dir", "SAMPLE",
                   "--split-test-set", "9500", "--limit-train", "256", "--batch-size", "32", "--epochs", "2",
                   "--augment", "crop+cutout:8", "--no-progress"]


def xpcnn(*args: str, at: str | None = None, sig: str = "SIGINT"):
    """test_interrupts.py's runner, with this checkout's xpcnn first on the path: bench/inject.py runs as a
    script, whose own folder, not the working directory, heads sys.path (an installed xpcnn would be imported)."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    command = [sys.executable, str(root / "bench" / "inject.py"), "--at", at, "--signal", sig, "--"] if at else \
        [sys.executable, "-m", "xpcnn.cli.main"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.subprocesses
def test_an_interrupted_augmented_run_resumes_bit_for_bit(tmp_path) -> None:
    from test_interrupts import outcome

    from xpcnn.data import datasets
    run = [str(datasets.SAMPLE_DIR) if a == "SAMPLE" else a for a in INTERRUPTED_RUN]
    whole = xpcnn(*run, "--out", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr
    plain = xpcnn(*[a for a in run if a not in ("--augment", "crop+cutout:8")], "--out", str(tmp_path / "plain"))
    assert plain.returncode == 0, plain.stderr
    expected_arrays, expected_history = outcome(tmp_path / "whole")
    assert expected_history != outcome(tmp_path / "plain")[1]  # the augmentation took part
    for at in ("forward:3", "backward:12"):  # mid-epoch 1 (SIGINT) and mid-epoch 2 (SIGTERM)
        out = tmp_path / at.replace(":", "-")
        first = xpcnn(*run, "--out", str(out), at=at, sig="SIGINT" if at.startswith("forward") else "SIGTERM")
        assert first.returncode == 130, first.stderr
        resumed = xpcnn("train", "--resume", str(out / "last.npz"), "--no-progress")
        assert resumed.returncode == 0, resumed.stderr
        arrays, history = outcome(out)
        assert [name for name in arrays if not np.array_equal(arrays[name], expected_arrays[name])] == []
        assert history == expected_history
