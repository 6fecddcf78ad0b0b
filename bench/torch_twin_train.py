"""Train the same architecture and hyper-parameters in native PyTorch, for the accuracy comparison.

Usage: python bench/torch_twin_train.py --model mnist-cnn --dataset fashion-mnist --epochs 10 --batch-size 128
Data, normalization, initial weights and shuffling order are xpcnn's own, so only the engine differs.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

import xpcnn
from xpcnn.backend.random import permutation_host
from xpcnn.backend.torch_reference import build_torch_model
from xpcnn.data import datasets
from xpcnn.data.batches import normalize


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="mnist-cnn")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-dir")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    info = datasets.dataset_info(args.dataset)
    train, test = datasets.load(args.dataset, args.data_dir)
    x_train = torch.tensor(normalize(train.images, info.mean, info.std))
    y_train = torch.tensor(train.labels)
    x_test = torch.tensor(normalize(test.images, info.mean, info.std))
    ours = xpcnn.models.build(args.model, seed=args.seed)
    model = build_torch_model(ours.config())
    model.load_state_dict({k: torch.tensor(np.asarray(v)) for k, v in ours.state_dict().items()}, strict=False)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    for epoch in range(args.epochs):
        model.train()
        order = torch.tensor(permutation_host(len(train), args.seed, epoch))
        start = time.perf_counter()
        for first in range(0, len(train), args.batch_size):
            idx = order[first:first + args.batch_size]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x_train[idx]), y_train[idx]).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            pred = torch.cat([model(x_test[i:i + 1000]).argmax(1) for i in range(0, len(test), 1000)])
        acc = float((pred.numpy() == test.labels).mean())
        print(json.dumps({"epoch": epoch + 1, "test_accuracy": acc, "seconds": time.perf_counter() - start}),
              flush=True)
    print(json.dumps({"engine": "pytorch", "model": args.model, "dataset": args.dataset, "final_test_accuracy": acc}))


if __name__ == "__main__":
    main()
