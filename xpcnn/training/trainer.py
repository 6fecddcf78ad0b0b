"""``Trainer``: moves a model to a device, trains it with a progress bar, evaluates and predicts."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from xpcnn import backend as B
from xpcnn.backend import host
from xpcnn.checkpoint import Checkpoint, save_checkpoint
from xpcnn.data import normalization
from xpcnn.data.batches import DeviceData, channel_statistics, check_channels, image_shape
from xpcnn.data.datasets import Split, dataset_info
from xpcnn.data.normalization import Normalization
from xpcnn.distributed.data_parallel import data_parallel
from xpcnn.errors import DataError, ShapeError, XpcnnError
from xpcnn.kernels import compile_seconds
from xpcnn.losses import SoftmaxCrossEntropy, check_labels
from xpcnn.model import Sequential
from xpcnn.ops.loss import log_softmax
from xpcnn.optim.base import Optimizer
from xpcnn.resources import check_batch_memory
from xpcnn.training.callbacks import Callback, format_epoch
from xpcnn.training.interrupts import at_step_boundaries
from xpcnn.training.metrics import confusion_matrix, summarize


#: MNIST's ``(mean, std)``: the normalization of images whose dataset is unknown.
MNIST_NORMALIZATION = (0.1307, 0.3081)

#: The progress bar's layout: ``epoch 3/10  45%|████      | 844/1875 [00:06, loss 0.1234 acc 0.9650 4903 img/s]``
#: (time left, then :func:`bar_postfix`), which fits 80 columns with a bar for up to 99 epochs, 99,999
#: batches, an hour left and 99,999 img/s.
BAR_FORMAT = "{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{remaining}{postfix}]"


def bar_postfix(loss: float, accuracy: float, images_per_s: float) -> str:
    """The progress bar's metrics: ``loss 0.1234 acc 0.9650 4903 img/s``."""
    return f"loss {loss:.4f} acc {accuracy:.4f} {images_per_s:.0f} img/s"


def dataset_normalization(split: Split | None) -> Normalization | None:
    """The ``(mean, std)`` of the dataset ``split`` comes from (its ``dataset`` name): its published constants
    (per channel for CIFAR's), or, for a dataset without any (``image-folder``, a user's own images), the
    per-channel statistics of ``split``'s own images (:func:`~xpcnn.data.batches.channel_statistics`). None when
    the dataset is unknown."""
    name = getattr(split, "dataset", None)
    if not name:
        return None
    try:
        info = dataset_info(name)
    except DataError:
        return None
    if info.mean is None or info.std is None:
        return channel_statistics(split.images)  # type: ignore[union-attr]
    return normalization.checked((info.mean, info.std))


def model_takes(model: Sequential, shape: tuple[int, int, int, int]) -> bool:
    """Whether ``model`` takes a batch of ``shape``."""
    try:
        model.output_shape(shape)
    except ShapeError:
        return False
    return True


def _checked_normalization(value: Any) -> Normalization:
    return normalization.checked(value)


def _no_interrupt() -> None:
    """Outside :meth:`Trainer.fit` no Ctrl-C is deferred, so there is nothing to act on."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during :meth:`Trainer.fit`, after the callbacks saved what they save."""


class TrainingDiverged(XpcnnError, RuntimeError):
    """The training loss (or, at the end of an epoch, a weight or optimizer slot) became NaN or infinite.

    Raised by :meth:`Trainer.fit` before the epoch's callbacks run, so no checkpoint is written from the
    diverged weights and the history gets no record of the epoch. ``epoch`` and ``step`` (1-based, within the
    epoch) say where it was noticed, ``loss`` is the loss read there (the epoch's finite mean loss when a weight
    or slot, not the loss, went non-finite).
    """

    def __init__(self, message: str, epoch: int, step: int, loss: float) -> None:
        super().__init__(message)
        self.epoch, self.step, self.loss = epoch, step, loss
        self.every_rank = True  # data-parallel ranks share their gradients, so they diverge together: one report


class Trainer:
    """Train ``model`` with ``optimizer`` on ``device`` ("cpu", "cuda", "cuda:N") and ``backend``.

    ``"cpu"`` trains on NumPy and ``"cuda"`` on CuPy unless ``backend`` names another namespace.

    Images are uint8 ``(N, H, W)`` or ``(N, C, H, W)`` (colour: ``(N, 3, H, W)``), scaled to [0, 1] and
    standardized with ``normalization``, a ``(mean, std)`` pair whose entries are each a number (every channel
    alike) or a sequence of one number per channel (``((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))``).
    Left at None, it is chosen at the first :meth:`fit` (and kept, so evaluation uses the training constants):
    the constants the model was trained with (``model.normalization``, which :func:`xpcnn.load` restores), else
    those of the training split's dataset (``split.dataset``, as :func:`xpcnn.data.datasets.load` sets it:
    Fashion-MNIST's for Fashion-MNIST, CIFAR-10's per channel for CIFAR-10, the training images' own per-channel
    statistics for ``image-folder``), else MNIST's ``(0.1307, 0.3081)``. An explicit pair always wins.
    ``fit`` records the pair in
    ``model.normalization`` and checkpoints record it too. ``progress=False`` makes :meth:`fit` silent by default.

    ``distributed=True`` (or an :mod:`xpcnn.distributed` communicator) trains data-parallel over the ranks of an
    MPI job (``mpiexec -n K python ...``): ``batch_size`` is per rank (the global batch is K times it, the
    learning rate is not rescaled), :meth:`fit` starts from rank 0's weights and optimizer state, each rank
    trains on its shard of every epoch's shared permutation (:mod:`xpcnn.distributed.sharding`: the last
    ``N % K`` images of it are left out) and gradients are averaged over the ranks after each backward pass.
    Metrics are summed over the ranks; only rank 0 prints and runs the callbacks (so only rank 0 writes files).
    Raises :class:`~xpcnn.errors.DistributedError` without mpi4py, or, at the start of :meth:`fit`, when the
    ranks were started with different configurations.
    ``augment`` (e.g. :func:`xpcnn.data.augment.policy` or a :class:`~xpcnn.data.augment.Compose` of
    :mod:`xpcnn.data.augment`'s transforms) is applied to each training batch ``(N, C, H, W)`` on the device, after
    normalization, as ``augment(x, (seed, epoch, batch))`` (0-based epoch and batch in the epoch): the draws depend
    on those three numbers only, so a resumed run augments exactly as an uninterrupted one. Evaluation and
    prediction never augment. In a data-parallel run each rank's batch number is ``batch * K + rank``, so the
    ranks draw different crops and flips for their different images.
    """

    def __init__(self, model: Sequential, optimizer: Optimizer | None = None, loss: SoftmaxCrossEntropy | None = None,
                 device: Any = "cpu", backend: str | None = None, seed: int = 0,
                 normalization: Normalization | None = None, schedule: Any = None,
                 progress: bool = True, distributed: Any = False,
                 augment: Callable[[Any, tuple[int, int, int]], Any] | None = None) -> None:
        if augment is not None and not callable(augment):
            raise TypeError(f"augment must be a callable (x, key) -> x such as xpcnn.data.augment.policy("
                            f"'crop+flip', 32, 32), got {augment!r}")
        if normalization is not None:
            normalization = _checked_normalization(normalization)
        self.parallel = data_parallel(distributed, model)  # one process: every hook does nothing
        self.model = model.to(self.parallel.device(device), backend)  # "cuda": one GPU per rank of a machine
        self.placement = self.model.placement
        self.optimizer = optimizer
        if optimizer is not None:
            optimizer.load_state_dict(optimizer.state_dict())  # its slots follow the model's device
        self.loss = loss or SoftmaxCrossEntropy()
        self.seed, self.normalization, self.schedule, self.progress = seed, normalization, schedule, progress
        self.augment = augment
        self.epoch = 0            # epochs finished
        self.batch_in_epoch = 0   # batches finished in the current epoch
        self.global_step = 0
        self.history: list[dict[str, Any]] = []
        self.stop_training = False
        self._interrupt_point = _no_interrupt  # during fit: raises KeyboardInterrupt after a deferred Ctrl-C
        self.extra_meta: dict[str, Any] = {}
        self._epoch_totals: tuple[Any, ...] | None = None  # the running sums of the epoch in progress
        self._saved_totals: dict[str, Any] | None = None   # those of a checkpoint, until its epoch goes on

    # -- training -----------------------------------------------------------------------------
    def _normalization(self, split: Split | None = None) -> Normalization:
        """The ``(mean, std)`` in use, or the one :meth:`fit` would choose for ``split`` (see the class docstring)."""
        if self.normalization is not None:
            return self.normalization
        recorded = getattr(self.model, "normalization", None)
        if recorded is not None:
            return _checked_normalization(recorded)
        return dataset_normalization(split) or MNIST_NORMALIZATION

    def _device_data(self, split: Split) -> DeviceData:
        return DeviceData(split, self.placement, *self._normalization(split), dtype=self.model.dtype)

    def _input_shape(self, images: host.ndarray) -> tuple[int, int, int, int]:
        """``(1, C, H, W)`` for a batch of ``images``, after checking the model's first layer takes C channels.

        Raises :class:`ShapeError` in one line naming both channel counts and the fix.
        """
        c, h, w = image_shape(images.shape)
        for layer in self.model.layers:
            expected = getattr(layer, "in_channels", getattr(layer, "num_features", None))
            if expected is not None and expected != c:
                given = "(N, H, W), grey" if len(images.shape) == 3 else f"{tuple(images.shape)}"
                raise ShapeError(f"{layer.name} expects {expected} input channel{'s' * (expected != 1)}, but the "
                                 f"images have {c} "
                                 f"(shape {given}); pass (N, {expected}, H, W) images, or build the model for "
                                 f"{c}-channel input ({type(layer).__name__}({c}, ...) as its first layer)")
            if expected is not None or hasattr(layer, "in_features"):
                break
        return (1, c, h, w)

    def _checked_data(self, split: Split, where: str, num_classes: int | None = None) -> DeviceData:
        """``split`` on the device, after checking its images and labels fit the model, once, on the host
        (``num_classes``: what :meth:`_checked_shapes` returned for ``split``, when the caller already checked).

        Raises :class:`ShapeError` naming the split's files and the image size the model takes when its
        images do not fit (32x32 images for a model whose Dense layer was sized for 28x28)."""
        num_classes = self._checked_shapes(split) if num_classes is None else num_classes
        check_labels(split.labels, num_classes, where=where)
        return self._device_data(split)

    def _checked_shapes(self, split: Split) -> int:
        """The model's number of classes, after checking ``split``'s images fit it (see :meth:`_checked_data`)."""
        shape = self._input_shape(split.images)
        try:
            num_classes = self.model.output_shape(shape)[-1]
        except ShapeError as exc:
            source = " and ".join(str(f) for f in getattr(split, "files", ())) or "the data"
            taken = [s for s in (28, *range(1, 513)) if model_takes(self.model, (1, shape[1], s, s))][:1]
            fits = f"it takes images of shape {(shape[1], taken[0], taken[0])}" if taken else "no square size fits"
            detail = str(exc).split(";")[0]  # the layer's own advice is about building a model, not the data
            raise ShapeError(f"{source}: images of shape (C, H, W) = {shape[1:]} do not fit the model ({detail}); "
                             f"{fits}: resize the images, or build the model for {shape[2]}x{shape[3]} input"
                             ) from None
        return num_classes

    def fit(self, train: Split, val: Split | None = None, epochs: int = 1, batch_size: int = 32,
            callbacks: Iterable[Callback] = (), verbose: int | None = None) -> list[dict[str, Any]]:
        """Train until ``epochs`` epochs are finished in total (a resumed run continues its count).

        ``train`` and ``val`` hold uint8 images ``(N, H, W)`` or ``(N, C, H, W)`` and int labels ``(N,)``.
        ``verbose`` as in Keras: 0 silent, 1 a progress bar (loss, accuracy and img/s so far) and one line per
        epoch, 2 the line per epoch only; default 1, or 0 for a ``Trainer(progress=False)``. The epoch line
        (:func:`~xpcnn.training.format_epoch`: loss, accuracy, img/s, seconds and, given ``val``, val_loss
        and val_accuracy) goes to stderr, like the bar, so stdout stays free for results.

        Returns the history: one record per epoch with ``loss``, ``accuracy``, ``images_per_s``
        and, given ``val``, ``val_loss`` and ``val_accuracy``. Ctrl-C runs the callbacks'
        ``on_interrupt`` (a checkpoint saves) and raises :class:`TrainingInterrupted`. Raises
        :class:`ShapeError` for channel-last images or a channel count the model does not take,
        :class:`~xpcnn.errors.ResourceError` (on the CPU) for a batch whose activations alone cannot fit in memory,
        and :class:`TrainingDiverged` when the loss becomes NaN or infinite: the running loss is read back from the
        device about every 0.5 s (with or without a progress bar) and at the end of each epoch, where the
        weights and optimizer slots are checked too; the epoch's callbacks do not run then (no checkpoint,
        no history record). A loss that is finite, however large, is not an error.

        A schedule steps after each epoch, or after each batch where its ``interval`` is ``"batch"``
        (:class:`~xpcnn.optim.OneCycleLR`, :class:`~xpcnn.optim.WarmupCosineLR`; checkpoints hold its step count,
        so a resumed run continues it exactly); the history's ``lr`` is the rate of the epoch's last step. Raises
        ValueError, before training, when such a schedule's ``total_steps`` ends before ``epochs`` do.
        """
        if self.optimizer is None:
            raise ValueError("Trainer.fit needs an optimizer: Trainer(model, xpcnn.optim.Adam(model), ...)")
        if epochs <= 0 or batch_size <= 0:
            raise ValueError(f"epochs and batch_size must be positive, got epochs={epochs}, batch_size={batch_size}")
        if verbose is None:
            verbose = 1 if self.progress else 0
        if verbose not in (0, 1, 2):
            raise ValueError(f"verbose must be 0 (silent), 1 (progress bar and epoch lines) or 2 (epoch lines), "
                             f"got {verbose!r}")
        callbacks, verbose = (list(callbacks), verbose) if self.parallel.is_main else ([], 0)  # rank 0 reports
        self.normalization = self._normalization(train)  # chosen once: evaluation uses the training constants
        self.model.normalization = self.normalization
        num_classes = self._checked_shapes(train)
        check_channels(*self.normalization, image_shape(train.images.shape)[0])
        if self.placement.kind == "cpu":  # a GPU's memory is its own: its library reports running out
            check_batch_memory(self.model, self._input_shape(train.images), batch_size, len(train),
                               8 if self.model.dtype == "float64" else 4)
        data = self._checked_data(train, "training labels", num_classes)
        self._check_schedule_length(data.num_batches(batch_size, self.parallel.shard), epochs)
        val_data = self._checked_data(val, "validation labels") if val is not None else None  # moved once
        self.loss.check = False  # checked once above; per-batch checks would synchronize a GPU
        self.parallel.start(self, data.count, batch_size, verbose)  # same configuration everywhere; rank 0's weights
        self.stop_training = False
        for callback in callbacks:
            if hasattr(callback, "on_train_begin"):  # callbacks may be duck-typed, without the newer hook
                callback.on_train_begin(self)
        try:
            with at_step_boundaries() as self._interrupt_point:  # Ctrl-C acts between steps (interrupts.py)
                self._fit_epochs(data, val_data, epochs, batch_size, callbacks, verbose)
        except KeyboardInterrupt:
            for callback in callbacks:
                callback.on_interrupt(self)
            raise TrainingInterrupted() from None
        finally:
            self.loss.check = True
            self._interrupt_point = _no_interrupt
        return self.history

    def _per_batch_schedule(self) -> bool:
        return self.schedule is not None and getattr(self.schedule, "interval", "epoch") == "batch"

    def _check_schedule_length(self, batches_per_epoch: int, epochs: int) -> None:
        """Raise ValueError if a per-batch schedule with ``total_steps`` would run out before ``epochs`` end."""
        total = getattr(self.schedule, "total_steps", None)
        if not self._per_batch_schedule() or total is None:
            return
        remaining = max(epochs - self.epoch, 0) * batches_per_epoch - self.batch_in_epoch
        if self.schedule.epoch + remaining > total:
            raise ValueError(f"{type(self.schedule).__name__} has total_steps={total}, but training to epoch {epochs} "
                             f"takes {self.schedule.epoch + remaining} steps ({batches_per_epoch} batches per epoch); "
                             f"build it with total_steps={epochs * batches_per_epoch}, or train fewer epochs")

    def _fit_epochs(self, data: DeviceData, val_data: DeviceData | None, epochs: int, batch_size: int,
                    callbacks: list[Callback], verbose: int) -> None:
        """The epochs of :meth:`fit`: train, validate, step the schedule, report, run the callbacks."""
        while self.epoch < epochs and not self.stop_training:
            record = self._train_epoch(data, batch_size, epochs, show_bar=verbose == 1)
            if val_data is not None:
                result = self._evaluate(val_data, batch_size=max(batch_size, 256))
                record.update(val_loss=result["loss"], val_accuracy=result["accuracy"])
            if self.schedule is not None and not self._per_batch_schedule():
                record["lr"] = self.optimizer.lr
                self.schedule.step()
            if verbose:
                print(format_epoch(record, epochs), file=sys.stderr, flush=True)
            self.history.append(record)
            for callback in callbacks:
                callback.on_epoch_end(self, record)
            self.stop_training = self.parallel.agree(self.stop_training)  # rank 0's callbacks decide
            self._interrupt_point()

    def _train_epoch(self, data: DeviceData, batch_size: int, epochs: int, show_bar: bool = True) -> dict[str, Any]:
        model, xp = self.model.train(), self.placement.xp
        total, shard = data.num_batches(batch_size, self.parallel.shard), self.parallel.shard
        bar = tqdm(total=total, initial=self.batch_in_epoch, desc=f"epoch {self.epoch + 1}/{epochs}",
                   unit="batch", disable=not show_bar, dynamic_ncols=True, leave=False, bar_format=BAR_FORMAT,
                   file=sys.stderr)  # the epoch line replaces the bar when the epoch ends
        loss_sum, correct, seen, earlier = self._restored_totals(xp)  # a resumed epoch counts its earlier part
        started, shown = time.perf_counter() - earlier, 0.0
        unread: list[Any] = []  # the steps' losses since the running loss was last read: to name the bad step
        compiled_before = compile_seconds()  # first-use kernel compilation is left out of img/s
        per_batch_schedule, lr = self._per_batch_schedule(), self.optimizer.lr
        try:
            batches = data.batches(batch_size, (self.seed, self.epoch), start=self.batch_in_epoch, shard=shard)
            for batch, (x, y) in enumerate(batches, start=self.batch_in_epoch):
                if self.augment is not None:  # the draws depend on (seed, epoch, batch) alone: resumable
                    x = self.augment(x, (self.seed, self.epoch, batch * self.parallel.size + self.parallel.rank))
                logits = model.forward(x)
                value = self.loss.forward(logits, y)
                model.backward(self.loss.backward(), need_input_grad=False)
                self.parallel.average_gradients()  # data-parallel: the mean over the ranks, one allreduce per dtype
                self.optimizer.step()
                if per_batch_schedule:  # stepped with the batch counters: a checkpoint between steps resumes exactly
                    lr = self.optimizer.lr
                    self.schedule.step()
                n = y.shape[0]
                hits = xp.sum(xp.astype(xp.argmax(logits, axis=1) == y, xp.int32))  # int32: JAX's default width
                loss_sum = value * n if loss_sum is None else loss_sum + value * n  # stays on the device
                correct = hits if correct is None else correct + hits
                unread.append(value)
                seen += n
                self._epoch_totals = (loss_sum, correct, seen, started, compiled_before)
                self.batch_in_epoch += 1
                self.global_step += 1
                self._interrupt_point()  # the step is whole and counted: a Ctrl-C during it acts here
                bar.update(1)
                now = time.perf_counter()
                if now - shown > 0.5:  # reading the device's sums synchronizes it: rarely, bar or not
                    shown = now
                    running = float(loss_sum) / seen
                    self._check_loss(running, unread, total)
                    unread = []
                    if show_bar:
                        busy = now - started - (compile_seconds() - compiled_before)
                        bar.set_postfix_str(bar_postfix(running, int(correct) / seen,
                                                        seen * self.parallel.size / max(busy, 1e-9)))
            elapsed = time.perf_counter() - started - (compile_seconds() - compiled_before)
            if seen:
                self._check_loss(float(loss_sum) / seen, unread, total)
            loss_sum, correct, seen = self.parallel.sum(host.xp.asarray(  # over the ranks
                [float(loss_sum) if seen else 0.0, int(correct) if seen else 0, seen], dtype=host.xp.float64))
            self.parallel.end_epoch()  # BatchNorm's running statistics: the mean over the ranks
            record = {"epoch": self.epoch + 1, "loss": float(loss_sum) / seen if seen else float("nan"),
                      "accuracy": int(correct) / seen if seen else float("nan"),
                      "images_per_s": seen / elapsed if elapsed > 0 else 0.0, "seconds": elapsed}
            if per_batch_schedule:
                record["lr"] = lr  # the rate of the epoch's last step
            if seen:
                self._check_state(record["loss"], total)
            bar.set_postfix_str(bar_postfix(record["loss"], record["accuracy"], record["images_per_s"]))
        finally:
            bar.close()
        self.epoch += 1
        self.batch_in_epoch = 0
        self._epoch_totals = None
        return record

    def _restored_totals(self, xp: Any) -> tuple[Any, Any, int, float]:
        """The running sums (loss, correct, images, seconds) of the epoch part done before a resume, as
        :meth:`state_meta` saved them (in the dtypes they had, so the epoch's metrics come out as in an
        uninterrupted run); zeros for a fresh epoch."""
        saved, self._saved_totals = self._saved_totals, None
        if not saved or not self.batch_in_epoch or self.parallel.size > 1:  # rank 0's sums alone: not the epoch's
            return None, None, 0, 0.0
        loss_sum = xp.asarray(float(saved["loss_sum"]), dtype=getattr(xp, saved["loss_dtype"]))
        correct = xp.asarray(int(saved["correct"]), dtype=xp.int32)
        return loss_sum, correct, int(saved["seen"]), float(saved["seconds"])

    def _epoch_progress(self) -> dict[str, Any] | None:
        """The running sums of the epoch in progress, JSON-ready, or None between epochs."""
        if not self.batch_in_epoch or self._epoch_totals is None:
            return self._saved_totals if self.batch_in_epoch else None
        loss_sum, correct, seen, started, compiled_before = self._epoch_totals
        seconds = time.perf_counter() - started - (compile_seconds() - compiled_before)
        return {"loss_sum": float(loss_sum), "loss_dtype": str(loss_sum.dtype).rsplit(".", 1)[-1],
                "correct": int(correct), "seen": seen, "seconds": seconds}

    def _check_loss(self, running: float, unread: list[Any], total: int) -> None:
        """Raise :class:`TrainingDiverged` if the running loss is NaN or infinite, naming the first step
        among ``unread`` (the latest steps' losses, not yet read back) whose loss was."""
        if math.isfinite(running):
            return
        first = self.batch_in_epoch - len(unread) + 1
        step, loss = self.batch_in_epoch, running  # each loss finite, their sum overflowed: say where it did
        for offset, value in enumerate(unread):
            if not math.isfinite(float(value)):
                step, loss = first + offset, float(value)
                break
        raise TrainingDiverged(
            f"training diverged: the loss is {loss} at epoch {self.epoch + 1}, step {step} of {total}; nothing "
            f"was saved from this epoch. Train again with a lower learning rate than "
            f"{type(self.optimizer).__name__}'s {self.optimizer.lr:g}", self.epoch + 1, step, loss)

    def _check_state(self, loss: float, total: int) -> None:
        """Raise :class:`TrainingDiverged` if a weight, buffer or optimizer slot holds NaN or infinity (one
        read-back per array: once an epoch, before anything is saved)."""
        xp = self.placement.xp
        arrays = dict(self.model.state_dict())
        for key, slots in self.optimizer.state.items():
            arrays.update({f"{key} ({slot})": value for slot, value in slots.items()})
        for name, value in arrays.items():
            if xp.isdtype(value.dtype, "real floating") and not bool(xp.all(xp.isfinite(value))):
                raise TrainingDiverged(
                    f"training diverged: {name} holds NaN or infinite values at the end of epoch {self.epoch + 1} "
                    f"(step {self.batch_in_epoch} of {total}), although the loss was finite; nothing was saved "
                    f"from this epoch. Train again with a lower learning rate than "
                    f"{type(self.optimizer).__name__}'s {self.optimizer.lr:g}",
                    self.epoch + 1, self.batch_in_epoch, loss)

    # -- evaluation -----------------------------------------------------------------------------
    def evaluate(self, split: Split, batch_size: int = 256) -> dict[str, Any]:
        """``loss``, ``accuracy``, ``per_class_precision``, ``per_class_recall`` and ``confusion_matrix`` of the
        model on ``split`` (uint8 images ``(N, H, W)`` or ``(N, C, H, W)``, int labels ``(N,)``)."""
        return self._evaluate(self._checked_data(split, "evaluation labels"), batch_size)

    def _evaluate(self, data: DeviceData, batch_size: int) -> dict[str, Any]:
        model, xp = self.model.eval(), self.placement.xp
        split = data.split
        num_classes = model.output_shape(self._input_shape(split.images))[-1]
        loss = SoftmaxCrossEntropy(check=False)
        loss_sum, predictions, mine = None, [], []
        for indices in data.batch_indices(batch_size, shard=self.parallel.eval_shard):  # every image once
            x, y = data.batch(indices)
            logits = model.forward(x)
            value = loss.forward(logits, y) * y.shape[0]
            loss_sum = value if loss_sum is None else loss_sum + value
            predictions.append(B.to_numpy(xp.argmax(logits, axis=1)))
            mine.append(indices)
        model.train()
        predicted = host.xp.concat(predictions) if predictions else host.xp.zeros(0, dtype=host.xp.int64)
        labels = split.labels[host.xp.concat(mine)] if mine else split.labels[:0]
        matrix = self.parallel.sum(confusion_matrix(labels, predicted, num_classes))  # over the ranks
        loss_sum = self.parallel.sum(host.xp.asarray([float(loss_sum) if loss_sum is not None else 0.0]))[0]
        result = summarize(matrix)
        return {"loss": float(loss_sum) / len(split) if len(split) else float("nan"), **result}

    def predict(self, images: host.ndarray, batch_size: int = 256) -> host.ndarray:
        """Class probabilities ``(N, K)`` float (host NumPy) for uint8 images ``(N, H, W)`` or ``(N, C, H, W)``.

        Raises :class:`ShapeError` for channel-last images or a channel count the model does not take."""
        model, xp = self.model.eval(), self.placement.xp
        self._input_shape(images)
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
        dropout = {key: [layer.seed, layer.draws] for key, layer in self.model.named_modules()
                   if hasattr(layer, "draws")}  # keyed as the state dict: "5", or "3.block.2" inside a residual
        return {"trainer": {"epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                            "global_step": self.global_step, "seed": self.seed,
                            "normalization": normalization.to_json(self._normalization()),
                            "dropout_streams": dropout, "epoch_progress": self._epoch_progress(),
                            "world_size": self.parallel.size},
                "schedule": self.schedule.state_dict() if self.schedule is not None else None,
                "history": self.history, **self.extra_meta}

    def save(self, path: str | Path) -> Path:
        """Write a checkpoint of model, optimizer and progress to ``path`` (atomically).

        Raises :class:`CheckpointError`, writing nothing, if a weight or optimizer slot holds NaN or an infinity
        (:func:`xpcnn.checkpoint.save_checkpoint`): a diverged model is never saved, by :class:`ModelCheckpoint`
        either (:meth:`fit` raises :class:`TrainingDiverged` before the epoch's callbacks would save it).
        """
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
        self.batch_in_epoch = self.parallel.resume_step(state, self.batch_in_epoch)  # another K: epoch restarts
        if state.get("normalization") is not None:
            self.normalization = _checked_normalization(state["normalization"])
            self.model.normalization = self.normalization
        modules = dict(self.model.named_modules())
        for key, (seed, draws) in state.get("dropout_streams", {}).items():
            modules[key].seed, modules[key].draws = int(seed), int(draws)
        if self.schedule is not None and checkpoint.meta.get("schedule"):
            self.schedule.load_state_dict(checkpoint.meta["schedule"])
        self.history = list(checkpoint.meta.get("history", []))
        progress = state.get("epoch_progress")
        self._saved_totals = progress if isinstance(progress, dict) and self.batch_in_epoch else None
        self._epoch_totals = None
