"""``Trainer``: moves a model to a device, trains it with a progress bar, evaluates and predicts."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from xpcnn import backend as B
from xpcnn.backend import host
from xpcnn.checkpoint import Checkpoint, save_checkpoint
from xpcnn.data.batches import DeviceData
from xpcnn.data.datasets import Split
from xpcnn.losses import SoftmaxCrossEntropy, check_labels
from xpcnn.model import Sequential
from xpcnn.ops.loss import log_softmax
from xpcnn.optim.base import Optimizer
from xpcnn.training.callbacks import Callback
from xpcnn.training.metrics import confusion_matrix, summarize


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during :meth:`Trainer.fit`, after the callbacks saved what they save."""


class Trainer:
    """Train ``model`` with ``optimizer`` on ``device`` ("cpu", "cuda", "cuda:N") and ``backend``.

    ``"cpu"`` trains on NumPy and ``"cuda"`` on CuPy unless ``backend`` names another namespace.
    ``normalization`` is the ``(mean, std)`` applied to uint8 images after scaling to [0, 1].
    """

    def __init__(self, model: Sequential, optimizer: Optimizer | None = None, loss: SoftmaxCrossEntropy | None = None,
                 device: Any = "cpu", backend: str | None = None, seed: int = 0,
                 normalization: tuple[float, float] = (0.1307, 0.3081), schedule: Any = None,
                 progress: bool = True) -> None:
        self.model = model.to(device, backend)
        self.placement = self.model.placement
        self.optimizer = optimizer
        if optimizer is not None:
            optimizer.load_state_dict(optimizer.state_dict())  # its slots follow the model's device
        self.loss = loss or SoftmaxCrossEntropy()
        self.seed, self.normalization, self.schedule, self.progress = seed, normalization, schedule, progress
        self.epoch = 0            # epochs finished
        self.batch_in_epoch = 0   # batches finished in the current epoch
        self.global_step = 0
        self.history: list[dict[str, Any]] = []
        self.stop_training = False
        self.extra_meta: dict[str, Any] = {}

    # -- training -----------------------------------------------------------------------------
    def _device_data(self, split: Split) -> DeviceData:
        return DeviceData(split, self.placement, *self.normalization, dtype=self.model.dtype)

    def _checked_data(self, split: Split, where: str) -> DeviceData:
        """``split`` on the device, after checking its labels fit the model's output once, on the host."""
        num_classes = self.model.output_shape((1, 1, *split.images.shape[-2:]))[-1]
        check_labels(split.labels, num_classes, where=where)
        return self._device_data(split)

    def fit(self, train: Split, val: Split | None = None, epochs: int = 1, batch_size: int = 32,
            callbacks: Iterable[Callback] = ()) -> list[dict[str, Any]]:
        """Train until ``epochs`` epochs are finished in total (a resumed run continues its count).

        Returns the history: one record per epoch with ``loss``, ``accuracy``, ``images_per_s``
        and, given ``val``, ``val_loss`` and ``val_accuracy``. Ctrl-C runs the callbacks'
        ``on_interrupt`` (a checkpoint saves) and raises :class:`TrainingInterrupted`.
        """
        if self.optimizer is None:
            raise ValueError("Trainer.fit needs an optimizer: Trainer(model, xpcnn.optim.Adam(model), ...)")
        if epochs <= 0 or batch_size <= 0:
            raise ValueError(f"epochs and batch_size must be positive, got epochs={epochs}, batch_size={batch_size}")
        callbacks = list(callbacks)
        data = self._checked_data(train, "training labels")
        val_data = self._checked_data(val, "validation labels") if val is not None else None  # moved once
        self.loss.check = False  # checked once above; per-batch checks would synchronize a GPU
        self.stop_training = False
        try:
            while self.epoch < epochs and not self.stop_training:
                record = self._train_epoch(data, batch_size, epochs)
                if val_data is not None:
                    result = self._evaluate(val_data, batch_size=max(batch_size, 256))
                    record.update(val_loss=result["loss"], val_accuracy=result["accuracy"])
                if self.schedule is not None:
                    record["lr"] = self.optimizer.lr
                    self.schedule.step()
                self.history.append(record)
                for callback in callbacks:
                    callback.on_epoch_end(self, record)
        except KeyboardInterrupt:
            for callback in callbacks:
                callback.on_interrupt(self)
            raise TrainingInterrupted() from None
        finally:
            self.loss.check = True
        return self.history

    def _train_epoch(self, data: DeviceData, batch_size: int, epochs: int) -> dict[str, Any]:
        model, xp = self.model.train(), self.placement.xp
        total = data.num_batches(batch_size)
        bar = tqdm(total=total, initial=self.batch_in_epoch, desc=f"epoch {self.epoch + 1}/{epochs}",
                   unit="batch", disable=not self.progress, dynamic_ncols=True, leave=True)
        loss_sum, correct, seen, started, shown = None, None, 0, time.perf_counter(), 0.0
        for x, y in data.batches(batch_size, (self.seed, self.epoch), start=self.batch_in_epoch):
            logits = model.forward(x)
            value = self.loss.forward(logits, y)
            model.backward(self.loss.backward(), need_input_grad=False)
            self.optimizer.step()
            n = y.shape[0]
            hits = xp.sum(xp.astype(xp.argmax(logits, axis=1) == y, xp.int64))
            loss_sum = value * n if loss_sum is None else loss_sum + value * n  # stays on the device
            correct = hits if correct is None else correct + hits
            seen += n
            self.batch_in_epoch += 1
            self.global_step += 1
            bar.update(1)
            now = time.perf_counter()
            if self.progress and now - shown > 0.5:  # reading the device's sums synchronizes it: rarely
                shown = now
                bar.set_postfix(loss=f"{float(loss_sum) / seen:.4f}", acc=f"{int(correct) / seen:.4f}",
                                img_s=f"{seen / (now - started):.0f}")
        elapsed = time.perf_counter() - started
        record = {"epoch": self.epoch + 1, "loss": float(loss_sum) / seen if seen else float("nan"),
                  "accuracy": int(correct) / seen if seen else float("nan"),
                  "images_per_s": seen / elapsed if elapsed > 0 else 0.0, "seconds": elapsed}
        bar.set_postfix(loss=f"{record['loss']:.4f}", acc=f"{record['accuracy']:.4f}",
                        img_s=f"{record['images_per_s']:.0f}")
        bar.close()
        self.epoch += 1
        self.batch_in_epoch = 0
        return record

    # -- evaluation -----------------------------------------------------------------------------
    def evaluate(self, split: Split, batch_size: int = 256) -> dict[str, Any]:
        """``loss``, ``accuracy``, ``per_class_precision``, ``per_class_recall`` and ``confusion_matrix``."""
        return self._evaluate(self._checked_data(split, "evaluation labels"), batch_size)

    def _evaluate(self, data: DeviceData, batch_size: int) -> dict[str, Any]:
        model, xp = self.model.eval(), self.placement.xp
        split = data.split
        num_classes = model.output_shape((1, 1, *split.images.shape[-2:]))[-1]
        loss = SoftmaxCrossEntropy(check=False)
        loss_sum, predictions = None, []
        for x, y in data.batches(batch_size):
            logits = model.forward(x)
            value = loss.forward(logits, y) * y.shape[0]
            loss_sum = value if loss_sum is None else loss_sum + value
            predictions.append(B.to_numpy(xp.argmax(logits, axis=1)))
        model.train()
        predicted = host.xp.concat(predictions) if predictions else host.xp.zeros(0, dtype=host.xp.int64)
        result = summarize(confusion_matrix(split.labels, predicted, num_classes))
        return {"loss": float(loss_sum) / len(split) if len(split) else float("nan"), **result}

    def predict(self, images: host.ndarray, batch_size: int = 256) -> host.ndarray:
        """Class probabilities ``(N, K)`` (host NumPy) for uint8 images ``(N, H, W)`` or ``(N, C, H, W)``."""
        model, xp = self.model.eval(), self.placement.xp
        labels = host.xp.zeros(images.shape[0], dtype=host.xp.int64)
        data = self._device_data(Split(images, labels))
        out = []
        for x, _ in data.batches(batch_size):
            out.append(B.to_numpy(xp.exp(log_softmax(model.forward(x)))))
        model.train()
        return host.xp.concat(out)

    # -- checkpoints -----------------------------------------------------------------------------
    def state_meta(self) -> dict[str, Any]:
        """Progress and RNG state for a checkpoint (JSON-ready)."""
        dropout = {str(i): [layer.seed, layer.draws] for i, layer in enumerate(self.model.layers)
                   if hasattr(layer, "draws")}
        return {"trainer": {"epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                            "global_step": self.global_step, "seed": self.seed,
                            "normalization": list(self.normalization), "dropout_streams": dropout},
                "schedule": self.schedule.state_dict() if self.schedule is not None else None,
                "history": self.history, **self.extra_meta}

    def save(self, path: str | Path) -> Path:
        """Write a checkpoint of model, optimizer and progress to ``path`` (atomically)."""
        return save_checkpoint(path, self.model, self.optimizer, self.state_meta())

    def restore(self, checkpoint: Checkpoint) -> None:
        """Continue from ``checkpoint``: weights, optimizer slots, progress and RNG state."""
        self.model.load_state_dict(checkpoint.model_state)
        opt_meta = checkpoint.meta.get("optimizer", {})
        if self.optimizer is not None:
            self.optimizer.load_state_dict({"step": opt_meta.get("step", 0),
                                            "hyperparameters": opt_meta.get("hyperparameters", {}),
                                            "state": checkpoint.optimizer_slots})
        state = checkpoint.meta.get("trainer", {})
        self.epoch, self.batch_in_epoch = int(state.get("epoch", 0)), int(state.get("batch_in_epoch", 0))
        self.global_step, self.seed = int(state.get("global_step", 0)), int(state.get("seed", self.seed))
        self.normalization = tuple(state.get("normalization", self.normalization))
        for index, (seed, draws) in state.get("dropout_streams", {}).items():
            self.model.layers[int(index)].seed, self.model.layers[int(index)].draws = int(seed), int(draws)
        if self.schedule is not None and checkpoint.meta.get("schedule"):
            self.schedule.load_state_dict(checkpoint.meta["schedule"])
        self.history = list(checkpoint.meta.get("history", []))
