"""Divergence, strict JSON, hyper-parameters and dtypes (issue 16, items 4 and 9): a NaN or infinite loss stops
training with one clear line and saves nothing, every JSON line xpcnn writes is strict JSON, non-finite
hyper-parameters are refused, and a model keeps its dtype whatever batch it is given."""

from __future__ import annotations

import json
import math
import re
import types
from pathlib import Path

import numpy as np
import pytest
from test_cli import run_cli

import xpcnn
from xpcnn import backend as B
from xpcnn import strict_json
from xpcnn.backend import host
from xpcnn.checkpoint import load_checkpoint, save_checkpoint
from xpcnn.data.datasets import Split
from xpcnn.errors import CheckpointError, DTypeError, XpcnnError
from xpcnn.losses import SoftmaxCrossEntropy
from xpcnn.training import HistoryLogger, ModelCheckpoint, Trainer, TrainingDiverged
from xpcnn.training import trainer as trainer_module

SAMPLE = ["--dataset", "mnist-sample", "--limit-train", "256", "--model", "seed-simple", "--no-progress"]


def strict_loads(text: str):
    """``json.loads`` that refuses NaN and Infinity, as strict parsers (JavaScript, jq, Go) do."""
    def refuse(word: str):
        raise ValueError(f"not strict JSON: {word}")
    return json.loads(text, parse_constant=refuse)


def synthetic(n: int = 64, seed: int = 0) -> Split:
    rng = np.random.default_rng(seed)
    return Split(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int64))


def trainer(lr: float = 0.01, loss: SoftmaxCrossEntropy | None = None, optimizer_cls=xpcnn.optim.SGD) -> Trainer:
    model = xpcnn.models.build("seed-simple")
    return Trainer(model, optimizer_cls(model, lr), loss=loss, progress=False)


class NanLossAt(SoftmaxCrossEntropy):
    """Cross-entropy whose value (not its gradient) is NaN from call ``at`` on: a loss that diverges at a known step."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at, self.calls = at, 0

    def forward(self, logits, labels):
        self.calls += 1
        value = super().forward(logits, labels)
        return value * math.nan if self.calls >= self.at else value


# -- divergence in Trainer.fit ---------------------------------------------------------------------------------
@pytest.mark.parametrize("verbose", [0, 1, 2])
def test_a_nan_loss_stops_training_at_once_bar_or_not(verbose, tmp_path: Path) -> None:
    """NaN weights make the first step's loss NaN; it is read back at once, with or without a progress bar."""
    t = trainer()
    t.model.layers[0].params["weight"] = t.model.layers[0].params["weight"] * math.nan
    with pytest.raises(TrainingDiverged) as caught:
        t.fit(synthetic(), synthetic(seed=1), epochs=3, batch_size=8, verbose=verbose,
              callbacks=[ModelCheckpoint(tmp_path), HistoryLogger(tmp_path / "history.jsonl")])
    assert (caught.value.epoch, caught.value.step) == (1, 1) and math.isnan(caught.value.loss)
    assert isinstance(caught.value, XpcnnError)
    assert str(caught.value) == ("training diverged: the loss is nan at epoch 1, step 1 of 8; nothing was saved "
                                 "from this epoch. Train again with a lower learning rate than SGD's 0.01")
    assert t.global_step == 1, "no step after the diverged one"
    assert t.history == [] and list(tmp_path.iterdir()) == []


def test_the_first_bad_step_is_named_when_the_loss_is_read_late(monkeypatch) -> None:
    """Without a read-back in between (the clock stands still), the epoch's end names the first NaN step."""
    monkeypatch.setattr(trainer_module, "time", types.SimpleNamespace(perf_counter=lambda: 100.0))
    t = trainer(loss=NanLossAt(5))
    with pytest.raises(TrainingDiverged, match=r"the loss is nan at epoch 1, step 5 of 8;") as caught:
        t.fit(synthetic(), epochs=1, batch_size=8, verbose=0)
    assert caught.value.step == 5 and t.global_step == 8


def test_sgd_at_lr_1e6_diverges_in_python() -> None:
    t = trainer(lr=1e6)
    with pytest.raises(TrainingDiverged, match=r"^training diverged: the loss is (nan|inf) at epoch 1, step \d+ of 8"):
        t.fit(synthetic(), epochs=2, batch_size=8, verbose=0)
    assert t.history == []


class NanWeightOnLastStep(xpcnn.optim.SGD):
    """SGD that writes NaN into the last layer's bias on step ``at``: the weights diverge after the last loss."""

    at = 8

    def update(self, key, param, grad, state):
        param = super().update(key, param, grad, state)
        return param * math.nan if self.step_count == self.at and key == "3.bias" else param


def test_non_finite_weights_after_a_finite_loss_stop_training_before_saving(tmp_path: Path) -> None:
    t = trainer(optimizer_cls=NanWeightOnLastStep)
    with pytest.raises(TrainingDiverged, match=r"3\.bias holds NaN or infinite values at the end of epoch 1 "
                                               r"\(step 8 of 8\), although the loss was finite") as caught:
        t.fit(synthetic(), epochs=2, batch_size=8, verbose=0, callbacks=[ModelCheckpoint(tmp_path)])
    assert math.isfinite(caught.value.loss)
    assert list(tmp_path.iterdir()) == []


def test_a_later_divergence_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    t = trainer()
    callbacks = [ModelCheckpoint(tmp_path, monitor="loss", mode="min"), HistoryLogger(tmp_path / "history.jsonl")]
    t.fit(synthetic(), epochs=1, batch_size=8, verbose=0, callbacks=callbacks)
    t.loss = NanLossAt(at=3)  # epoch 2 diverges at its third step
    with pytest.raises(TrainingDiverged, match="epoch 2, step 3 of 8"):
        t.fit(synthetic(), epochs=2, batch_size=8, verbose=0, callbacks=callbacks)
    for name in ("last.npz", "best.npz"):
        checkpoint = load_checkpoint(tmp_path / name)
        assert checkpoint.meta["trainer"]["epoch"] == 1, name
        assert all(np.isfinite(v).all() for v in checkpoint.model_state.values()), name
    assert [r["epoch"] for r in map(strict_loads, (tmp_path / "history.jsonl").read_text().splitlines())] == [1]


def test_a_huge_finite_loss_is_not_an_error() -> None:
    """Adam at lr 1e6 reaches losses of 1e14 and more, finite: training goes on (as in PyTorch and Keras)."""
    model = xpcnn.models.build("seed-simple")
    t = Trainer(model, xpcnn.optim.Adam(model, lr=1e6), progress=False)
    history = t.fit(synthetic(), epochs=1, batch_size=8, verbose=0)
    assert math.isfinite(history[0]["loss"]) and history[0]["loss"] > 1e6


# -- checkpoints never hold non-finite weights ------------------------------------------------------------------
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_saving_non_finite_weights_is_refused_and_writes_nothing(value, tmp_path: Path) -> None:
    t = trainer()
    path = tmp_path / "last.npz"
    t.save(path)
    before = path.read_bytes()
    t.model.layers[3].params["weight"] = t.model.layers[3].params["weight"] * 0 + value
    with pytest.raises(CheckpointError, match=rf"not writing {re.escape(str(path))}: weight 3\.weight holds NaN or "
                                              rf"infinite values"):
        t.save(path)
    with pytest.raises(CheckpointError, match=r"weight 3\.weight holds NaN"):
        t.model.save(tmp_path / "model.npz")
    assert path.read_bytes() == before and not (tmp_path / "model.npz").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.npz"], "no temporary file is left behind"


def test_saving_non_finite_optimizer_slots_is_refused(tmp_path: Path) -> None:
    model = xpcnn.models.build("seed-simple")
    optimizer = xpcnn.optim.Adam(model)
    optimizer.state = {"0.weight": {"exp_avg_sq": host.full((8, 1, 3, 3), math.inf)}}
    with pytest.raises(CheckpointError, match=r"optimizer slot 0\.weight:exp_avg_sq holds NaN or infinite"):
        save_checkpoint(tmp_path / "c.npz", model, optimizer)


# -- strict JSON ------------------------------------------------------------------------------------------------
def test_strict_json_writes_non_finite_floats_as_null() -> None:
    value = {"loss": math.nan, "curve": [1.5, math.inf, -math.inf], "pair": (2, math.nan), "name": "x", "n": None}
    text = strict_json.dumps(value)
    assert strict_loads(text) == {"loss": None, "curve": [1.5, None, None], "pair": [2, None], "name": "x", "n": None}


def test_history_and_checkpoint_headers_are_strict_json(tmp_path: Path) -> None:
    t = trainer()
    record = {"epoch": 1, "loss": math.nan, "accuracy": 0.5, "images_per_s": math.inf, "seconds": 1.0}
    HistoryLogger(tmp_path / "history.jsonl").on_epoch_end(t, record)
    assert strict_loads((tmp_path / "history.jsonl").read_text()) == {**record, "loss": None, "images_per_s": None}
    t.history = [record]
    t.save(tmp_path / "last.npz")
    arrays = np.load(tmp_path / "last.npz", allow_pickle=False)
    header = strict_loads(arrays["__meta__"].tobytes().decode("utf-8"))
    assert header["history"][0]["loss"] is None


def test_cli_evaluate_json_is_strict_when_the_loss_overflows(tmp_path: Path) -> None:
    """Finite but huge weights overflow the logits: the loss is NaN, and --json says null."""
    model = xpcnn.models.build("seed-simple")
    for layer in model.layers:
        for name, value in layer.params.items():
            layer.params[name] = value * 0 + 1e30
    model.save(tmp_path / "huge.npz")
    result = run_cli("evaluate", str(tmp_path / "huge.npz"), "--dataset", "mnist-sample", "--json")
    assert result.returncode == 0, result.stderr
    assert strict_loads(result.stdout)["loss"] is None


# -- the CLI -----------------------------------------------------------------------------------------------------
def test_cli_train_stops_on_divergence_with_one_line_and_no_files(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_cli("train", *SAMPLE, "--optimizer", "sgd", "--lr", "1e6", "--epochs", "2", "--out", str(out))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("xpcnn train: error: training diverged: the loss is nan at epoch 1, step "), last
    assert last.endswith("Train again with a lower learning rate than SGD's 1e+06"), last
    assert [p.name for p in out.iterdir() if not p.name.startswith(".")] == []


def test_cli_train_json_and_history_are_strict(tmp_path: Path) -> None:
    """Adam at lr 1e6: losses of 1e14 and more, finite, so training finishes; every JSON line is strict."""
    out = tmp_path / "run"
    result = run_cli("train", *SAMPLE, "--lr", "1e6", "--epochs", "1", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert set(strict_loads(result.stdout)) == {"test_accuracy", "test_loss", "per_class_recall"}
    assert [strict_loads(line)["epoch"] for line in (out / "history.jsonl").read_text().splitlines()] == [1]


@pytest.mark.parametrize("flag, value", [("--momentum", "nan"), ("--lr", "nan"), ("--gamma", "nan")])
def test_cli_refuses_non_finite_hyperparameters(flag, value) -> None:
    result = run_cli("train", flag, value)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert f"{flag}: must be a finite" in result.stderr, result.stderr


# -- hyper-parameters in Python ----------------------------------------------------------------------------------
NAN, INF = math.nan, math.inf


@pytest.mark.parametrize("make, message", [
    (lambda m: xpcnn.optim.SGD(m, lr=NAN), r"SGD: Invalid learning rate: nan \(must be a finite number > 0\)"),
    (lambda m: xpcnn.optim.SGD(m, lr=INF), r"SGD: Invalid learning rate: inf"),
    (lambda m: xpcnn.optim.SGD(m, lr=-0.1), r"SGD: Invalid learning rate: -0.1"),
    (lambda m: xpcnn.optim.SGD(m, lr=0.1, momentum=NAN), r"SGD: Invalid momentum value: nan \(must be a finite "
                                                          r"number >= 0\)"),
    (lambda m: xpcnn.optim.SGD(m, lr=0.1, momentum=-1), r"SGD: Invalid momentum value: -1"),
    (lambda m: xpcnn.optim.SGD(m, lr=0.1, weight_decay=INF), r"SGD: Invalid weight_decay value: inf"),
    (lambda m: xpcnn.optim.Adam(m, lr=NAN), r"Adam: Invalid learning rate: nan"),
    (lambda m: xpcnn.optim.Adam(m, eps=NAN), r"Adam: Invalid epsilon value: nan \(must be a finite number > 0\)"),
    (lambda m: xpcnn.optim.Adam(m, eps=0), r"Adam: Invalid epsilon value: 0"),
    (lambda m: xpcnn.optim.Adam(m, betas=(NAN, 0.999)), r"Adam: Invalid beta parameter at index 0: nan"),
    (lambda m: xpcnn.optim.Adam(m, betas=(0.9, 1.0)), r"Adam: Invalid beta parameter at index 1: 1.0 \(must be a "
                                                       r"finite number >= 0 and < 1\)"),
    (lambda m: xpcnn.optim.Adam(m, betas=0.9), r"Adam: betas must be a pair"),
    (lambda m: xpcnn.optim.AdamW(m, weight_decay=NAN), r"AdamW: Invalid weight_decay value: nan"),
    (lambda m: xpcnn.optim.AdamW(m, lr="fast"), r"AdamW: Invalid learning rate: 'fast'"),
    (lambda m: xpcnn.optim.StepLR(xpcnn.optim.SGD(m, 0.1), 1, gamma=NAN), r"StepLR: Invalid gamma value: nan"),
    (lambda m: xpcnn.optim.StepLR(xpcnn.optim.SGD(m, 0.1), 1.5), r"StepLR: step_size must be a positive int"),
    (lambda m: xpcnn.optim.CosineAnnealingLR(xpcnn.optim.SGD(m, 0.1), 5, eta_min=INF),
     r"CosineAnnealingLR: Invalid eta_min value: inf"),
    (lambda m: xpcnn.optim.CosineAnnealingLR(xpcnn.optim.SGD(m, 0.1), 0), r"CosineAnnealingLR: t_max must be a "
                                                                          r"positive int"),
])
def test_optimizers_and_schedules_refuse_bad_hyperparameters(make, message) -> None:
    with pytest.raises(ValueError, match=message):
        make(xpcnn.models.build("seed-simple"))


def test_a_schedule_may_bring_the_rate_to_zero_and_a_checkpoint_keep_it(tmp_path: Path) -> None:
    model = xpcnn.models.build("seed-simple")
    optimizer = xpcnn.optim.SGD(model, 0.1)
    schedule = xpcnn.optim.CosineAnnealingLR(optimizer, t_max=1)
    assert schedule.step() == 0.0
    optimizer.load_state_dict(optimizer.state_dict())  # what Trainer does: a rate of 0 is fine there
    assert optimizer.lr == 0.0
    with pytest.raises(ValueError, match="Invalid learning rate: nan"):
        optimizer.load_state_dict({"step": 0, "hyperparameters": {"lr": math.nan}, "state": {}})


# -- dtypes ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make_optimizer", [lambda m: xpcnn.optim.SGD(m, 0.1, momentum=0.9), xpcnn.optim.Adam],
                         ids=["sgd-momentum", "adam"])
def test_a_float64_batch_leaves_a_float32_model_float32(make_optimizer, backend, rng) -> None:
    model = xpcnn.models.build("seed-simple").to(backend.placement.device, backend.placement.backend)
    optimizer = make_optimizer(model)
    loss = SoftmaxCrossEntropy()
    x = backend.asarray(rng.standard_normal((4, 1, 28, 28)))  # float64
    labels = backend.asarray(np.array([0, 1, 2, 3]))
    for _ in range(2):
        logits = model.forward(x)
        loss.forward(logits, labels)
        model.backward(backend.xp.astype(loss.backward(), backend.xp.float64))  # a float64 gradient too
        optimizer.step()
    assert logits.dtype == backend.xp.float32 and model.dtype == "float32"
    assert {str(B.to_numpy(p).dtype) for p in model.parameters()} == {"float32"}
    slots = [a for s in optimizer.state.values() for a in s.values()]
    assert slots and {str(B.to_numpy(a).dtype) for a in slots} == {"float32"}


def test_a_float64_batch_gives_the_float32_result() -> None:
    model = xpcnn.models.build("seed-simple")
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28))
    np.testing.assert_array_equal(model.forward(x), model.forward(x.astype(np.float32)))


@pytest.mark.parametrize("dtype", [np.uint8, np.int64, np.bool_])
def test_integer_input_to_a_model_is_refused(dtype) -> None:
    model = xpcnn.models.build("seed-simple")
    with pytest.raises(DTypeError, match=rf"Sequential.forward: expected a floating-point input, got dtype "
                                         rf"{np.dtype(dtype).name}; scale and standardize images first"):
        model.forward(np.zeros((1, 1, 28, 28), dtype))
