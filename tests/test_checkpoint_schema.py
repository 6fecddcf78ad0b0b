"""Checkpoint headers and arrays are checked before use (issue 16, items 5 and 6): a header of the wrong shape,
weights that are not real floats or an array larger than the file are one CheckpointError naming the file and
the field, never a traceback; what cannot fit in memory is refused up front, in one line."""

from __future__ import annotations

import io
import json
import math
import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import xpcnn
import xpcnn.resources
from xpcnn.backend import host
from xpcnn.checkpoint import load_checkpoint, load_model
from xpcnn.cli.main import main
from xpcnn.data.datasets import Split
from xpcnn.errors import CheckpointError, ResourceError
from xpcnn.layers import Dense
from xpcnn.model import Sequential
from xpcnn.resources import check_batch_memory, format_bytes
from xpcnn.training import Trainer

from test_cli import assert_one_line_error, run_cli

CLASSES = [str(i) for i in range(10)]


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(arrays, header)`` of a real training checkpoint: seed-simple after one Adam step, with the CLI's keys."""
    model = xpcnn.models.build("seed-simple")
    trainer = Trainer(model, xpcnn.optim.Adam(model, 1e-3), progress=False)
    rng = np.random.default_rng(0)
    trainer.fit(Split(rng.integers(0, 256, (16, 28, 28), dtype=np.uint8), rng.integers(0, 10, 16)), batch_size=16)
    trainer.extra_meta = {"dataset": "mnist", "classes": CLASSES, "run": {
        "model": "seed-simple", "dataset": "mnist", "batch_size": 16, "optimizer": "adam", "seed": 0, "epochs": 1},
        "training": {
        "schedule": "step", "step_size": 1, "gamma": 0.5, "t_max": None, "early_stopping": None}}
    path = trainer.save(tmp_path_factory.mktemp("good") / "last.npz")
    return host.load_arrays(path)


def _write(tmp_path: Path, arrays: dict[str, Any], header: Any) -> Path:
    path = tmp_path / "crafted.npz"
    host.save_arrays(path, arrays, header)
    return path


def _set(field: str, value: Any) -> Callable[[dict[str, Any]], Any]:
    """A change of the header: ``field`` (``"trainer.epoch"``, ``"model_config.layers.0.kernel_size"``) set to
    ``value``, or deleted for ``...``."""
    def change(header: dict[str, Any]) -> dict[str, Any]:
        *parents, last = field.split(".")
        node = header
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if value is ...:
            del node[last]
        else:
            node[int(last) if isinstance(node, list) else last] = value
        return header
    return change


HEADERS = [  # (change of a good header, the field and problem its message must name)
    (lambda h: [h], "header: expected a JSON object, got a list"),
    (lambda h: None, "header: expected a JSON object, got None"),
    (lambda h: "xpcnn-checkpoint", "header: expected a JSON object, got 'xpcnn-checkpoint'"),
    (_set("format_version", "1"), "header field format_version: expected a non-negative int, got '1'"),
    (_set("model_config", None), "header field model_config: expected a JSON object, got None"),
    (_set("model_config.layers", ...), "header field model_config.layers: missing (expected a list)"),
    (_set("model_config.layers", {"0": {}}), "header field model_config.layers: expected a list, got an object"),
    (_set("model_config.layers.0", "Conv2D"), "header field model_config.layers[0]: expected a JSON object"),
    (_set("model_config.layers.0.type", ...), "header field model_config.layers[0].type: missing"),
    (_set("model_config.layers.0.type", "Conv3D"),
     "header field model_config.layers[0].type: unknown layer type 'Conv3D'; xpcnn knows AvgPool2D, BatchNorm2D"),
    (_set("model_config.layers.0.kernal_size", 3),
     "header field model_config.layers[0].kernal_size: unknown keyword of Conv2D (its keywords: in_channels"),
    (_set("model_config.layers.0.kernel_size", "x"),
     "header field model_config.layers[0].kernel_size: expected a positive int or a pair of positive ints, got 'x'"),
    (_set("model_config.layers.0.kernel_size", [3, 0]), "model_config.layers[0].kernel_size: expected a positive"),
    (_set("model_config.layers.0.in_channels", ...),
     "header field model_config.layers[0].in_channels: missing (Conv2D needs in_channels, out_channels, kernel_size)"),
    (_set("model_config.layers.0.bias", "no"), "model_config.layers[0].bias: expected true or false, got 'no'"),
    (_set("model_config.layers.0.padding", "full"), "model_config.layers[0].padding: expected a non-negative int, "
                                                    "a pair of them, 'same' or 'valid', got 'full'"),
    (_set("model_config.layers.3.out_features", 10.0), "model_config.layers[3].out_features: expected a positive int"),
    (_set("model_config.layers.3", {"type": "Dense", "in_features": 1352}),
     "model_config.layers[3].out_features: missing (Dense needs in_features, out_features)"),
    (_set("model_dtype", "complex64"), "header field model_dtype: expected one of 'float32', 'float64'"),
    (_set("optimizer", []), "header field optimizer: expected a JSON object, got a list []"),
    (_set("optimizer.step", "3"), "header field optimizer.step: expected a non-negative int, got '3'"),
    (_set("optimizer.hyperparameters.lr", -0.1),  # 0 is fine: where a cosine schedule ends
     "header field optimizer.hyperparameters.lr: expected a finite number >= 0"),
    (_set("optimizer.hyperparameters.lr", ...), "header field optimizer.hyperparameters.lr: missing"),
    (_set("optimizer.hyperparameters.gamma", 0.5),
     "optimizer.hyperparameters.gamma: unknown hyper-parameter of Adam (its hyper-parameters: lr, betas"),
    (_set("optimizer.hyperparameters.betas", [0.9]), "optimizer.hyperparameters.betas: expected a pair of numbers"),
    (_set("trainer", None), "header field trainer: expected a JSON object, got None"),
    (_set("trainer.epoch", -1), "header field trainer.epoch: expected a non-negative int, got -1"),
    (_set("trainer.global_step", ...), "header field trainer.global_step: missing (expected a non-negative int)"),
    (_set("trainer.normalization", [0.1307, 0]), "header field trainer.normalization: expected a [mean, std] pair, "
                                                 "each a finite number or a list of one per channel, std > 0 or "
                                                 "null, got a list [0.1307, 0]"),
    (_set("trainer.normalization", [[0.5, 0.5, 0.5], [0.2, 0.2]]), "trainer.normalization: expected a [mean, std]"),
    (_set("trainer.normalization", [[0.5, 0.5, 0.5], [0.2, 0.0, 0.2]]), "trainer.normalization: expected a [mean, std]"),
    (_set("normalization", [[], 0.2]), "header field normalization: expected a [mean, std] pair"),
    (_set("trainer.normalization", [math.nan, 1.0]), "header field trainer.normalization: expected a [mean, std]"),
    (_set("trainer.dropout_streams", {"0": [1, 2]}),
     "header field trainer.dropout_streams.0: layer 0 of model_config is not a Dropout layer"),
    (_set("normalization", [0.5, -1.0]), "header field normalization: expected a [mean, std] pair"),
    (_set("schedule", {"epoch": 1}), "header field schedule.base_lr: missing (expected a finite number > 0)"),
    (_set("history", {"epoch": 1}), "header field history: expected a list, got an object"),
    (_set("run.dataset", "x"), "header field run.dataset: 'x' differs from the checkpoint's dataset"),
    (_set("history.0.loss", "low"), "header field history[0].loss: expected a number or null, got 'low'"),
    (_set("dataset", 7), "header field dataset: expected a string, got 7"),
    (_set("classes", ["only"]), "header field classes: 1 class name(s) for a model with 10 outputs; expected 10 names"),
    (_set("classes", "0123456789"), "header field classes: expected a non-empty list of strings, got '0123456789'"),
    (_set("classes", list(range(10))), "header field classes: expected a non-empty list of strings"),
    (_set("training", {"schedule": "exponential"}), "header field training.schedule: expected one of 'none', 'step'"),
    (_set("training.step_size", None), "header field training.step_size: missing (the step schedule needs step_size"),
]


@pytest.mark.parametrize("change, fragment", HEADERS, ids=[f[1][:60] for f in HEADERS])
def test_a_malformed_header_is_one_error_naming_file_and_field(good, tmp_path: Path, change, fragment) -> None:
    arrays, header = good
    path = _write(tmp_path, arrays, change(json.loads(json.dumps(header))))
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and fragment in message and "\n" not in message, message


ARRAYS = [  # (change of the good arrays, the array and problem the message must name)
    (lambda a: {**a, "model:0.weight": a["model:0.weight"].astype(np.complex64)},
     "array model:0.weight: expected real floating-point values (float32 or float64), got complex64"),
    (lambda a: {**a, "model:3.bias": np.array(["x"] * 10)}, "array model:3.bias: expected real floating-point values"),
    (lambda a: {**a, "model:3.bias": np.arange(10)}, "array model:3.bias: expected real floating-point values"),
    (lambda a: {**a, "optim:3.bias:exp_avg": np.zeros(11, np.float32)},
     "array optim:3.bias:exp_avg: shape (11,) differs from its parameter's (10,)"),
    (lambda a: {**a, "optim:9.weight:exp_avg": np.zeros(3, np.float32)},
     "array optim:9.weight:exp_avg: optimizer state for a parameter the file does not hold (model:9.weight)"),
]


@pytest.mark.parametrize("change, fragment", ARRAYS, ids=[f[1][:50] for f in ARRAYS])
def test_arrays_must_be_real_floats_of_the_right_shapes(good, tmp_path: Path, change, fragment) -> None:
    arrays, header = good
    path = _write(tmp_path, change(dict(arrays)), header)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and fragment in message and "\n" not in message, message


def _huge_member(path: Path, header: dict[str, Any]) -> Path:
    """An archive whose ``model:0.weight`` member declares a 3.55 PiB float64 tensor and stores 80 bytes."""
    npy = io.BytesIO()
    np.lib.format.write_array_header_1_0(npy, {"descr": "<f8", "fortran_order": False,
                                               "shape": (500_000_000, 1_000_000)})
    npy.write(bytes(80))
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("__meta__.npy", _npy(np.frombuffer(json.dumps(header).encode(), np.uint8)))
        archive.writestr("model:0.weight.npy", npy.getvalue())
    return path


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_an_array_larger_than_the_file_is_refused_before_allocating(good, tmp_path: Path) -> None:
    path = _huge_member(tmp_path / "huge.npz", good[1])
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert message.startswith(f"{path} is not a readable xpcnn checkpoint: array model:0.weight declares shape "
                              "(500000000, 1000000) of float64 (3.55 PiB) but the file stores 80 bytes of it"), message


def test_arrays_larger_than_memory_are_refused(good, tmp_path: Path, monkeypatch) -> None:
    arrays, header = good
    path = _write(tmp_path, arrays, header)
    monkeypatch.setattr(xpcnn.resources, "physical_memory_bytes", lambda: 1024)
    with pytest.raises(CheckpointError, match=r"its arrays hold .* more than this machine's memory \(1 KiB\)"):
        load_checkpoint(path)


def test_a_model_larger_than_memory_is_refused_before_building(good, tmp_path: Path, monkeypatch) -> None:
    arrays, header = good
    header = json.loads(json.dumps(header))
    header["model_config"]["layers"][3] = {"type": "Dense", "in_features": 1352, "out_features": 10_000_000}
    header.pop("classes")
    path = _write(tmp_path, arrays, header)
    monkeypatch.setattr(xpcnn.resources, "physical_memory_bytes", lambda: 2**30)
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    assert str(info.value) == (f"{path}: header field model_config: the model has 13,530,000,072 parameters (50.4 GiB "
                               "as float32), more than this machine's memory (1 GiB); load it on a machine with more "
                               "memory")


def test_a_good_header_loads_and_unknown_top_level_keys_are_ignored(good, tmp_path: Path) -> None:
    arrays, header = good
    header = {**header, "run": {"anything": [1, 2]}, "made_by": "a newer xpcnn"}  # forward compatibility
    model = load_model(_write(tmp_path, arrays, header))
    np.testing.assert_array_equal(model.state_dict()["0.weight"], arrays["model:0.weight"])
    assert model.normalization == tuple(header["trainer"]["normalization"])


def test_a_custom_optimizer_keeps_its_own_hyperparameters(good, tmp_path: Path) -> None:
    arrays, header = good
    header = json.loads(json.dumps(header))
    header["optimizer"] = {"type": "Lion", "step": 1, "hyperparameters": {"lr": 1e-4, "beta": 0.95}}
    assert load_checkpoint(_write(tmp_path, arrays, header)).meta["optimizer"]["type"] == "Lion"


def test_keywords_a_layer_refuses_name_the_layer(good, tmp_path: Path) -> None:
    arrays, header = good
    header = json.loads(json.dumps(header))
    header["model_config"]["layers"][0].update(padding="same", stride=2)  # each valid alone, not together
    path = _write(tmp_path, arrays, header)
    with pytest.raises(CheckpointError, match=f"^{path}: model_config.layers\\[0\\] \\(Conv2D\\): padding='same' "
                                              "needs stride 1"):
        load_model(path)


@pytest.mark.parametrize("index", [0, 10, 36, 19])
def test_the_cli_prints_one_line_for_a_malformed_header(good, tmp_path: Path, index: int) -> None:
    change, fragment = HEADERS[index]
    arrays, header = good
    path = _write(tmp_path, arrays, change(json.loads(json.dumps(header))))
    result = run_cli("evaluate", str(path))
    assert_one_line_error(result, f"xpcnn evaluate: error: {path}")
    assert fragment in result.stderr


def test_the_cli_prints_one_line_for_bad_arrays(good, tmp_path: Path) -> None:
    arrays, header = good
    complex_weights = _write(tmp_path, ARRAYS[0][0](dict(arrays)), header)
    assert_one_line_error(run_cli("predict", str(complex_weights), "digit.png"), "got complex64")
    huge = _huge_member(tmp_path / "huge.npz", header)
    assert_one_line_error(run_cli("evaluate", str(huge)), "declares shape (500000000, 1000000) of float64 (3.55 PiB)")


# -- resources ---------------------------------------------------------------------------------------------
def test_format_bytes() -> None:
    assert [format_bytes(n) for n in (80, 2048, 3 * 2**30, 4 * 10**15)] == ["80 bytes", "2 KiB", "3 GiB", "3.55 PiB"]


def test_a_layer_larger_than_memory_is_refused_before_allocating(monkeypatch) -> None:
    monkeypatch.setattr(xpcnn.resources, "physical_memory_bytes", lambda: 2**20)
    with pytest.raises(ResourceError, match=r"layer weights of shape \(1000, 1000\) need 7.63 MiB to initialize, "
                                            r"more than this machine's memory \(1 MiB\); use smaller layer sizes"):
        Dense(1000, 1000)
    with pytest.raises(ResourceError, match="use smaller layer sizes"):
        Sequential.from_config({"layers": [{"type": "Dense", "in_features": 1000, "out_features": 1000}]})
    monkeypatch.setattr(xpcnn.resources, "physical_memory_bytes", lambda: None)  # unknown: nothing refused
    assert Dense(10, 10).params["weight"].shape == (10, 10)


def test_the_batch_estimate_is_a_lower_bound_that_refuses_what_cannot_fit(monkeypatch) -> None:
    model = xpcnn.models.build("seed-simple")  # per image: 8*26*26 + 8*13*13 + 1352 + 10 floats, and gradients
    per_image = 2 * (8 * 26 * 26 + 8 * 13 * 13 + 1352 + 10) * 4
    monkeypatch.setattr(xpcnn.resources, "physical_memory_bytes", lambda: 100 * per_image)
    check_batch_memory(model, (1, 1, 28, 28), 100, 60_000, 4)  # fits: no error
    check_batch_memory(model, (1, 1, 28, 28), 10_000_000, 100, 4)  # only 100 images: one step of 100
    with pytest.raises(ResourceError) as info:
        check_batch_memory(model, (1, 1, 28, 28), 10_000_000, 60_000, 4)
    assert str(info.value).startswith("batch size 10,000,000 (60,000 images per step) needs at least ")
    assert str(info.value).endswith("pass a smaller batch size (at most about 100)")


def test_fit_refuses_a_batch_that_cannot_fit(monkeypatch) -> None:
    model = xpcnn.models.build("seed-simple")
    trainer = Trainer(model, xpcnn.optim.SGD(model, 0.01), progress=False)
    monkeypatch.setattr(xpcnn.resources, "physical_memory_bytes", lambda: 2**20)
    images = np.zeros((64, 28, 28), np.uint8)
    with pytest.raises(ResourceError, match="^batch size 64 needs at least"):
        trainer.fit(Split(images, np.zeros(64, np.int64)), batch_size=64)
    assert trainer.global_step == 0


def test_cli_train_refuses_a_batch_that_cannot_fit(monkeypatch, capsys, tmp_path: Path) -> None:
    monkeypatch.setattr(xpcnn.resources, "physical_memory_bytes", lambda: 64 * 2**20)
    code = main(["train", "--dataset", "mnist-sample", "--batch-size", "10000000", "--epochs", "1",
                 "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 2, err  # the run's first line, then the error
    assert err[1].startswith("xpcnn train: error: batch size 10,000,000 (8,000 images per step) needs at least")


class OutOfMemoryError(RuntimeError):
    """As torch names the error of a GPU out of memory."""


@pytest.mark.parametrize("error", [MemoryError(), OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")])
def test_cli_reports_running_out_of_memory_in_one_line(monkeypatch, capsys, tmp_path: Path, error) -> None:
    def out_of_memory(*args: Any, **kwargs: Any) -> None:
        raise error
    monkeypatch.setattr(Trainer, "fit", out_of_memory)
    code = main(["train", "--dataset", "mnist-sample", "--batch-size", "6000", "--epochs", "1",
                 "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "Traceback" not in "".join(err)
    assert err[-1] == "xpcnn train: error: out of memory at batch size 6000: pass a smaller --batch-size"


def test_per_channel_normalization_and_image_shape_load(good, tmp_path: Path) -> None:
    """A colour run's header: ``normalization`` per channel (old files' plain numbers still load, above), the
    training images' ``image_shape``, image-folder's run options."""
    arrays, header = good
    per_channel = [[0.4914, 0.4822, 0.4465], [0.247, 0.2435, 0.2616]]
    header = json.loads(json.dumps(header))
    header["trainer"]["normalization"] = per_channel
    header.update(image_shape=[3, 32, 32])
    model = load_model(_write(tmp_path, arrays, header))
    assert model.normalization == (tuple(per_channel[0]), tuple(per_channel[1]))
    mixed = {**header, "normalization": [[0.5, 0.5, 0.5], 0.25]}  # a shared std with per-channel means
    assert load_model(_write(tmp_path, arrays, mixed)).normalization == ((0.5, 0.5, 0.5), 0.25)
    for field, bad, expected in (("image_shape", [3, 32], "a [channels, height, width] list of positive ints"),
                                 ("run", {"channels": 2}, "1 or 3"), ("run", {"val_fraction": 1.0}, "(0, 1)")):
        with pytest.raises(CheckpointError, match=re.escape(expected)):
            load_model(_write(tmp_path, arrays, {**header, field: bad}))


@pytest.fixture(scope="module")
def residual(tmp_path_factory) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(arrays, header)`` of a model with a residual layer (a projection shortcut, dropout in the block)."""
    from xpcnn import layers as L
    model = Sequential([L.Residual([L.Conv2D(1, 2, 3, padding=1, bias=False), L.BatchNorm2D(2), L.Dropout(0.2)],
                                   [L.Conv2D(1, 2, 1, bias=False), L.BatchNorm2D(2)]),
                        L.ReLU(), L.GlobalAvgPool2D(), L.Flatten(), L.Dense(2, 10)])
    trainer = Trainer(model, xpcnn.optim.SGD(model, 0.1), progress=False)
    rng = np.random.default_rng(0)
    trainer.fit(Split(rng.integers(0, 256, (8, 6, 6), dtype=np.uint8), rng.integers(0, 10, 8)), batch_size=8)
    path = trainer.save(tmp_path_factory.mktemp("residual") / "last.npz")
    return host.load_arrays(path)


def test_a_residual_checkpoint_loads(residual, tmp_path: Path) -> None:
    arrays, header = residual
    streams = header["trainer"]["dropout_streams"]
    assert list(streams) == ["0.block.2"] and streams["0.block.2"][1] == 1  # one mask drawn
    model = load_model(_write(tmp_path, arrays, header))
    assert "0.shortcut.1.running_var" in model.state_dict()
    np.testing.assert_array_equal(model.state_dict()["0.block.0.weight"], arrays["model:0.block.0.weight"])


@pytest.mark.parametrize("change, fragment", [
    (_set("model_config.layers.0.block.1.num_features", 0),
     "header field model_config.layers[0].block[1].num_features: expected a positive int, got 0"),
    (_set("model_config.layers.0.block", []), "model_config.layers[0].block: expected a non-empty list of layers, got"),
    (_set("model_config.layers.0.shortcut", "conv"),
     "model_config.layers[0].shortcut: expected a non-empty list of layers or null, got 'conv'"),
    (_set("model_config.layers.0.shortcut.0.type", "Conv3D"),
     "model_config.layers[0].shortcut[0].type: unknown layer type 'Conv3D'"),
    (_set("model_config.layers.0.block.0.kernal_size", 3),
     "model_config.layers[0].block[0].kernal_size: unknown keyword of Conv2D"),
    (_set("trainer.dropout_streams", {"0.block.1": [1, 2]}),
     "header field trainer.dropout_streams.0.block.1: layer 0.block.1 of model_config is not a Dropout layer"),
    (_set("trainer.dropout_streams", {"0.side.2": [1, 2]}),
     "header field trainer.dropout_streams.0.side.2: expected a layer's key as the key"),
    (_set("training", {"schedule": "onecycle", "total_steps": 10}),
     "header field training.pct_start: missing (the onecycle schedule needs total_steps and pct_start)"),
    (_set("training", {"label_smoothing": 2}), "header field training.label_smoothing: expected a number in [0, 1]"),
])
def test_a_malformed_residual_header_is_one_error_naming_the_nested_field(residual, tmp_path: Path, change,
                                                                          fragment) -> None:
    arrays, header = residual
    path = _write(tmp_path, arrays, change(json.loads(json.dumps(header))))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(info.value).startswith(f"{path}: ") and fragment in str(info.value), str(info.value)
