"""The benchmark harness itself: FLOP counts against hand-computed values, and the JSON fields."""

from __future__ import annotations

import json

import pytest

import xpcnn
from xpcnn.bench.flops import inference_flops, layer_flops, training_flops
from xpcnn.cli.main import main


def test_flops_seed_simple_by_hand() -> None:
    model = xpcnn.models.build("seed-simple")
    conv = 2 * (1 * 3 * 3) * 8 * 26 * 26       # 2 * C*kh*kw * O * Ho*Wo
    dense = 2 * 1352 * 10
    assert inference_flops(model) == conv + dense
    # training: forward + weight gradients everywhere, input gradients for all but the first layer
    assert training_flops(model) == 2 * conv + 3 * dense


def test_flops_mnist_cnn_by_hand() -> None:
    model = xpcnn.models.build("mnist-cnn")
    conv1 = 2 * 9 * 32 * 26 * 26
    conv2 = 2 * 32 * 9 * 64 * 24 * 24
    dense1, dense2 = 2 * 9216 * 128, 2 * 128 * 10
    assert inference_flops(model) == conv1 + conv2 + dense1 + dense2
    assert training_flops(model) == 2 * conv1 + 3 * (conv2 + dense1 + dense2)
    assert 70e6 < training_flops(model) < 75e6  # "about 72 MFLOP per image"
    assert [r["layer"] for r in layer_flops(model)] == list(range(len(model.layers)))


def test_bench_json_fields(capsys) -> None:
    pytest.importorskip("torch")
    assert main(["bench", "--model", "seed-simple", "--batch-size", "4", "--steps", "1", "--repeats", "1",
                 "--settle", "0", "--json", "--breakdown"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("model", "backend", "device", "batch_size", "train_img_s", "infer_img_s", "reference_train_img_s",
                "ratio_vs_reference", "train_gflop_s", "fraction_of_peak", "matmul_peak_gflop_s"):
        assert key in record, key
    assert record["model"] == "seed-simple" and record["batch_size"] == 4 and record["backend"] == "numpy"
    assert record["train_img_s"] > 0 and record["ratio_vs_reference"] > 0
    assert len(record["layers"]) == 4


def test_bench_without_reference(capsys) -> None:
    assert main(["bench", "--model", "seed-simple", "--batch-size", "2", "--steps", "1", "--repeats", "1",
                 "--settle", "0", "--reference", "none", "--json"]) == 0
    record = json.loads(capsys.readouterr().out.strip())
    assert record["reference_train_img_s"] is None and record["ratio_vs_reference"] is None



def test_layer_times_walk_the_plan(monkeypatch) -> None:
    """The per-layer breakdown runs the step as Sequential does: seed-deep's ReLU before the max-pool
    never runs on its own, the fused pair runs as one step, and every layer gets a row."""
    from xpcnn import backend as B
    from xpcnn.bench.harness import XpcnnStep
    from xpcnn.layers import ReLU
    from xpcnn.plan import FusedStep

    calls: list[str] = []
    relu_forward, fused_forward = ReLU.forward, FusedStep.forward

    def recording_relu(self, x):
        calls.append(self.name)
        return relu_forward(self, x)

    def recording_fused(self, x):
        calls.append(f"{self.pool.name} with ReLU")
        return fused_forward(self, x)

    monkeypatch.setattr(ReLU, "forward", recording_relu)
    monkeypatch.setattr(FusedStep, "forward", recording_fused)
    step = XpcnnStep("seed-deep", 4, B.resolve("cpu"))
    rows = step.layer_times(repeats=1)
    assert [r["layer"] for r in rows] == [f"{i} {type(layer).__name__}" for i, layer in enumerate(step.model.layers)]
    assert calls == ["layer 1 (ReLU)", "layer 4 (MaxPool2D) with ReLU", "layer 7 (ReLU)"]
    assert all(r["forward_ms"] >= 0 and r["backward_ms"] >= 0 for r in rows)
    assert rows[3]["forward_ms"] == 0.0 and rows[4]["forward_ms"] > 0


def test_bench_without_torch_times_xpcnn_alone(capsys, monkeypatch) -> None:
    """In a venv without PyTorch, ``xpcnn bench`` says so in one line and times xpcnn alone."""
    import importlib.util
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else find_spec(name, *a))
    assert main(["bench", "--model", "seed-simple", "--batch-size", "2", "--steps", "1", "--repeats", "1",
                 "--settle", "0", "--json"]) == 0
    captured = capsys.readouterr()
    assert "PyTorch is not installed, so xpcnn is timed alone" in captured.err
    record = json.loads(captured.out.strip())
    assert record["train_img_s"] > 0 and record["reference"] is None


# -- presets on their own input shape (resnet20 and fastnet: 3x32x32) -------------------------------------------------

def test_preset_input_shapes() -> None:
    from xpcnn.bench.harness import build_preset, preset_input_shape
    assert preset_input_shape("mnist-cnn") == (1, 28, 28)
    assert preset_input_shape("resnet20") == preset_input_shape("fastnet") == (3, 32, 32)
    assert preset_input_shape("fastnet", (1, 16, 24)) == (1, 16, 24)
    with pytest.raises(ValueError, match="three positive ints"):
        preset_input_shape("resnet20", (3, 32))
    with pytest.raises(ValueError, match="lenet5 is built for 1x28x28 images"):
        build_preset("lenet5", input_shape=(3, 32, 32))
    assert build_preset("lenet5", input_shape=(1, 28, 28)).config() == xpcnn.models.build("lenet5").config()


def test_torch_step_takes_the_preset_shape() -> None:
    """The PyTorch twin times the same batch shape as xpcnn: 3x32x32 for resnet20 (it used to be fixed at 1x28x28)."""
    pytest.importorskip("torch")
    from xpcnn import backend as B
    from xpcnn.backend.torch_reference import TorchTrainStep
    from xpcnn.bench.harness import XpcnnStep
    ours = XpcnnStep("resnet20", 2, B.resolve("cpu"))
    ref = TorchTrainStep(ours.model.config(), ours.model.state_dict(), 2, input_shape=ours.input_shape)
    assert tuple(ours.x.shape) == tuple(ref.x.shape) == (2, 3, 32, 32)
    ours.train()
    ref.train()  # a 1x28x28 batch would fail in the first conv (3 input channels)


def test_bench_resnet20_on_3x32x32(capsys) -> None:
    pytest.importorskip("torch")
    from xpcnn.bench.flops import training_flops
    assert main(["bench", "--model", "resnet20", "--batch-size", "2", "--steps", "1", "--repeats", "1",
                 "--settle", "0", "--json", "--breakdown"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["model"] == "resnet20" and record["input_shape"] == [3, 32, 32]
    assert record["train_img_s"] > 0 and record["reference_train_img_s"] > 0 and record["ratio_vs_reference"] > 0
    # the FLOP rate counts 3x32x32 images: GFLOP/s / (img/s) is the FLOPs of one image's step
    per_image = record["train_gflop_s"] * 1e9 / record["train_img_s"]
    assert per_image == pytest.approx(training_flops(xpcnn.models.build("resnet20"), (3, 32, 32)), rel=1e-9)
    assert len(record["layers"]) == len(xpcnn.models.build("resnet20").layers)


def test_bench_input_option(capsys) -> None:
    pytest.importorskip("torch")
    assert main(["bench", "--model", "fastnet", "--input", "1x16x16", "--batch-size", "2", "--steps", "1",
                 "--repeats", "1", "--settle", "0"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("fastnet batch 2 (1x16x16) on numpy/cpu: train ") and "ratio" in line


@pytest.mark.subprocesses
def test_bench_input_errors_are_one_line() -> None:
    from test_cli import assert_one_line_error, run_cli
    result = run_cli("bench", "--model", "mnist-cnn", "--input", "3x32x32", "--batch-size", "2")
    assert_one_line_error(result, "mnist-cnn is built for 1x28x28 images and 10 classes, got in_channels=3")
    result = run_cli("bench", "--model", "resnet20", "--input", "3x32")
    assert result.returncode == 2 and "expected CxHxW with three positive integers, e.g. 3x32x32, got '3x32'" \
        in result.stderr and "Traceback" not in result.stderr


@pytest.mark.subprocesses
def test_processes_times_resnet20_on_3x32x32(tmp_path) -> None:
    """bench/processes.py (what `nox -s compare` runs) builds resnet20 for 3x32x32 in both engines' fresh processes
    and labels its row with that shape; the 28x28 rows keep their old form."""
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, str(root / "bench" / "processes.py"), "--xpcnn-path", str(root),
                             "--models", "resnet20", "seed-simple", "--batch-sizes", "2", "--rounds", "1",
                             "--seconds", "0", "--warmup", "0", "--orders", "numpy-first",
                             "--busy", "1000", "--label", "test", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    runs = [json.loads(line) for line in next(tmp_path.glob("*-processes-test.jsonl")).read_text().splitlines()]
    assert {(r["model"], r["engine"], tuple(r["input_shape"])) for r in runs} == {
        ("resnet20", "xpcnn", (3, 32, 32)), ("resnet20", "torch", (3, 32, 32)),
        ("seed-simple", "xpcnn", (1, 28, 28)), ("seed-simple", "torch", (1, 28, 28))}
    assert all(r["img_s"] > 0 for r in runs)
    table = next(tmp_path.glob("*-processes-test.md")).read_text()
    assert "| resnet20 (3x32x32) | 2 | " in table and "| seed-simple | 2 | " in table
