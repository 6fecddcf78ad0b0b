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
