"""Train the same architecture and hyper-parameters in native PyTorch, for the accuracy comparison.

Usage (the flags mean what ``xpcnn train``'s do):

    python bench/torch_twin_train.py --model mnist-cnn --dataset fashion-mnist --epochs 10 --batch-size 128
    python bench/torch_twin_train.py --model resnet20 --dataset fashion-mnist --epochs 20 --batch-size 128 \\
        --optimizer sgd --nesterov --lr 0.1 --weight-decay 5e-4 --schedule warmup-cosine --label-smoothing 0.1 \\
        --augment

What is xpcnn's: the data, its normalization, the initial weights (the preset built with ``--seed``), the
shuffling order and the augmentation draws (xpcnn's batches and :mod:`xpcnn.data.augment` policy, computed with
NumPy and handed to torch as tensors). What is PyTorch's: the model (``torch.nn`` modules), the loss
(``cross_entropy`` with ``label_smoothing``), autograd, the optimizer (``torch.optim.SGD``/``Adam``) and the
schedule (``SequentialLR(LinearLR, CosineAnnealingLR)``, ``OneCycleLR``, ``CosineAnnealingLR``, ``StepLR``).
So only the engine differs. Each epoch prints one JSON line; the last line holds the final test accuracy.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

import xpcnn
from xpcnn import backend as B
from xpcnn.backend.torch_reference import build_torch_model
from xpcnn.cli.train import _fitted_head
from xpcnn.data import augment, datasets
from xpcnn.data.batches import DeviceData, image_shape
from xpcnn.training.trainer import dataset_normalization


def _schedule(args: argparse.Namespace, opt: torch.optim.Optimizer, steps_per_epoch: int):
    """PyTorch's own scheduler for ``--schedule``, and whether it steps per batch."""
    sched, total = torch.optim.lr_scheduler, args.epochs * steps_per_epoch
    if args.schedule == "none":
        return None, False
    if args.schedule == "warmup-cosine":
        warm = args.warmup_epochs * steps_per_epoch
        return sched.SequentialLR(opt, [sched.LinearLR(opt, start_factor=0.1, total_iters=warm),
                                        sched.CosineAnnealingLR(opt, T_max=total - warm)], [warm]), True
    if args.schedule == "onecycle":
        pct = args.warmup_epochs / args.epochs if args.warmup_epochs else 0.3
        return sched.OneCycleLR(opt, max_lr=args.lr, total_steps=total, pct_start=pct,
                                cycle_momentum=args.optimizer == "sgd"), True
    if args.schedule == "cosine":
        return sched.CosineAnnealingLR(opt, T_max=args.epochs), False
    return sched.StepLR(opt, step_size=args.step_size or max(1, args.epochs // 3), gamma=args.gamma), False


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="mnist-cnn")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-dir")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    p.add_argument("--lr", type=float)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--nesterov", action="store_true")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--schedule", choices=("none", "step", "cosine", "warmup-cosine", "onecycle"), default="none")
    p.add_argument("--warmup-epochs", type=int)
    p.add_argument("--step-size", type=int)
    p.add_argument("--gamma", type=float, default=0.1)
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--augment", nargs="?", const="default")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit-train", type=int, help="train on the first N images only (a quick check)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: PyTorch's)")
    args = p.parse_args()
    args.lr = args.lr or (0.01 if args.optimizer == "sgd" else 1e-3)
    if args.schedule == "warmup-cosine":
        args.warmup_epochs = args.warmup_epochs or 1
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    info = datasets.dataset_info(args.dataset)
    train, test = datasets.load(args.dataset, args.data_dir)
    if args.limit_train:
        train = train.take(0, args.limit_train)
    c, h, w = image_shape(train.images.shape)
    shape = {"in_channels": c, "image_size": (h, w), "num_classes": len(info.classes)} \
        if xpcnn.models.takes_shape(args.model) else {}
    ours = _fitted_head(xpcnn.models.build(args.model, seed=args.seed, **shape), len(info.classes), args.seed)
    model = build_torch_model(ours.config())
    state = {k: torch.tensor(np.asarray(v)) for k, v in ours.state_dict().items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if not k.endswith("num_batches_tracked")]:
        raise SystemExit(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
    mean, std = dataset_normalization(train)
    host = B.resolve("cpu", "numpy")
    train_data, test_data = DeviceData(train, host, mean, std), DeviceData(test, host, mean, std)
    policy = "none" if args.augment is None else augment.resolve_policy(args.augment, h, w, info.digits)
    transform = augment.policy(policy, h, w, info.digits)
    params = [{"params": model.parameters()}]
    if args.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=args.lr, momentum=args.momentum, nesterov=args.nesterov,
                              weight_decay=args.weight_decay)
    else:
        opt = torch.optim.Adam(params, lr=args.lr, weight_decay=args.weight_decay)
    steps = train_data.num_batches(args.batch_size)
    schedule, per_batch = _schedule(args, opt, steps)
    print(json.dumps({"engine": "pytorch", "torch": torch.__version__, "threads": torch.get_num_threads(),
                      **{k: v for k, v in vars(args).items() if k != "threads"}, "augment": policy}), flush=True)
    for epoch in range(args.epochs):
        model.train()
        start, loss_sum, correct = time.perf_counter(), 0.0, 0
        for batch, (x, y) in enumerate(train_data.batches(args.batch_size, (args.seed, epoch))):
            if transform is not None:
                x = transform(x, (args.seed, epoch, batch))
            x, y = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.asarray(y)).long()
            opt.zero_grad()
            logits = model(x)
            loss = torch.nn.functional.cross_entropy(logits, y, label_smoothing=args.label_smoothing)
            loss.backward()
            opt.step()
            if per_batch:
                schedule.step()
            loss_sum += float(loss.detach()) * len(y)
            correct += int((logits.argmax(1) == y).sum())
        if schedule is not None and not per_batch:
            schedule.step()
        seconds = time.perf_counter() - start
        model.eval()
        with torch.no_grad():
            pred = torch.cat([model(torch.from_numpy(np.ascontiguousarray(x))).argmax(1)
                              for x, _ in test_data.batches(1000)])
        acc = float((pred.numpy() == test.labels).mean())
        print(json.dumps({"epoch": epoch + 1, "loss": loss_sum / len(train), "accuracy": correct / len(train),
                          "test_accuracy": acc, "lr": opt.param_groups[0]["lr"], "seconds": seconds}), flush=True)
    print(json.dumps({"engine": "pytorch", "model": args.model, "dataset": args.dataset, "final_test_accuracy": acc}))


if __name__ == "__main__":
    main()
