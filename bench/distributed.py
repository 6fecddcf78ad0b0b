"""Data-parallel scaling: img/s on 1 and 2 ranks, allreduce time against gradient bytes, and the expected
scaling to 8-64 ranks over 10 and 100 Gbit/s networks worked out from those measurements.

    python bench/distributed.py [--models seed-deep mnist-cnn] [--batch-size 32] [--steps 30] [--out bench/results]

Each configuration is one ``mpiexec -n K`` job (K = 1, 2; one thread per rank: XPCNN_NUM_THREADS=1 and
OPENBLAS_NUM_THREADS=OMP_NUM_THREADS=1, without which each rank's BLAS threads fought for the cores: 3-7x slower)
that runs the trainer's own hooks (:class:`xpcnn.distributed.data_parallel.DataParallel`) on synthetic
MNIST-shaped data: warm-up steps (numba compiles), then ``--steps`` timed steps of forward, backward,
gradient averaging (timed apart) and Adam. A second job times bare allreduces of 4 KiB to 16 MiB.
Writes ``<out>/<date>-<host>-distributed.md`` (table and extrapolation) and the raw ``.jsonl`` beside it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RING_LATENCY_S = {"10 Gbit/s": 30e-6, "100 Gbit/s": 5e-6}  # per ring hop: TCP over Ethernet; RDMA (InfiniBand/RoCE)
BANDWIDTH_B_S = {"10 Gbit/s": 10e9 / 8, "100 Gbit/s": 100e9 / 8}


def worker(args: argparse.Namespace) -> None:
    import numpy as np

    import xpcnn
    from xpcnn.distributed.data_parallel import DataParallel
    comm = xpcnn.distributed.init()
    if args.worker == "allreduce":
        for size in [2**k for k in range(12, 25, 2)]:
            buffer = np.ones(size // 4, dtype=np.float32)
            times = []
            for _ in range(20):
                started = time.perf_counter()
                comm.allreduce(buffer)
                times.append(time.perf_counter() - started)
            if comm.is_main:
                print(json.dumps({"kind": "allreduce", "ranks": comm.size, "bytes": size,
                                  "seconds": float(np.median(times))}), flush=True)
        return
    model = xpcnn.models.build(args.worker).to("cpu")
    optimizer = xpcnn.optim.Adam(model)
    parallel = DataParallel(comm, model)
    parallel.broadcast_state(optimizer)
    rng = np.random.default_rng(comm.rank)
    x = rng.standard_normal((args.batch_size, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, args.batch_size)
    loss = xpcnn.losses.SoftmaxCrossEntropy()
    step_times, reduce_times = [], []
    for i in range(args.steps + 5):
        started = time.perf_counter()
        loss.forward(model.forward(x), y)
        model.backward(loss.backward(), need_input_grad=False)
        reduce_started = time.perf_counter()
        parallel.average_gradients()
        reduced = time.perf_counter()
        optimizer.step()
        if i >= 5:  # the first steps compile
            step_times.append(time.perf_counter() - started)
            reduce_times.append(reduced - reduce_started)
    grad_bytes = sum(int(np.asarray(p).nbytes) for p in model.parameters())
    total = comm.allreduce(np.array([sum(step_times)]), op="max")[0]
    if comm.is_main:
        print(json.dumps({"kind": "train", "model": args.worker, "ranks": comm.size, "batch_per_rank": args.batch_size,
                          "images_per_s": comm.size * args.batch_size * args.steps / total,
                          "step_s": float(np.median(step_times)), "allreduce_s": float(np.median(reduce_times)),
                          "gradient_bytes": grad_bytes}), flush=True)


def job(ranks: int, what: str, args: argparse.Namespace) -> list[dict]:
    mpiexec = Path(sys.executable).parent / "mpiexec"
    env = {**os.environ, "XPCNN_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT), "OMPI_ALLOW_RUN_AS_ROOT": "1",
           "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    done = subprocess.run([str(mpiexec if mpiexec.exists() else "mpiexec"), "-n", str(ranks), sys.executable, __file__,
                           "--worker", what, "--batch-size", str(args.batch_size), "--steps", str(args.steps)],
                          capture_output=True, text=True, env=env, check=True, timeout=900)
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def extrapolate(train: dict, single: dict) -> list[str]:
    """Rows of the expected scaling: step = one rank's compute + ring allreduce of the gradients (no overlap)."""
    compute = single["step_s"]
    rows = []
    for net, bandwidth in BANDWIDTH_B_S.items():
        for ranks in (8, 16, 32, 64):
            moved = 2 * (ranks - 1) / ranks * train["gradient_bytes"]
            reduce = moved / bandwidth + 2 * (ranks - 1) * RING_LATENCY_S[net]
            rate = ranks * train["batch_per_rank"] / (compute + reduce)
            rows.append(f"| {train['model']} | {net} | {ranks} | {moved / 1e6:.2f} | {1e3 * moved / bandwidth:.2f} "
                        f"+ {1e3 * 2 * (ranks - 1) * RING_LATENCY_S[net]:.2f} = {1e3 * reduce:.2f} | "
                        f"{1e3 * compute:.1f} | {rate:,.0f} | {compute / (compute + reduce):.0%} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--models", nargs="+", default=["seed-deep", "mnist-cnn"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    records = []
    for model in args.models:
        for ranks in (1, 2):
            records += job(ranks, model, args)
    records += job(2, "allreduce", args)
    stem = args.out / f"{datetime.date.today()}-{socket.gethostname()}-distributed"
    stem.with_suffix(".jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    train = {(r["model"], r["ranks"]): r for r in records if r["kind"] == "train"}
    lines = [f"# Data-parallel scaling ({datetime.date.today()}, {socket.gethostname()}, {os.cpu_count()} cores)", "",
             f"Command: `python bench/distributed.py --models {' '.join(args.models)} --batch-size {args.batch_size} "
             f"--steps {args.steps}`; MPI: the mpich wheel, loopback; one thread per rank (XPCNN_NUM_THREADS=1, "
             "OPENBLAS_NUM_THREADS=OMP_NUM_THREADS=1). The 2 cores are shared with other jobs (load average "
             f"{os.getloadavg()[0]:.1f} at the end): the numbers are noisy, and 2 ranks cannot have 2 whole cores, "
             "so the 2-rank efficiency here is a floor, not the engine's cost: that is the allreduce column. "
             "The allreduce column in training includes waiting for the slower rank; the bare allreduce table "
             "below is the transfer alone.", "",
             "| model | ranks | batch/rank | img/s | efficiency | step ms | allreduce ms | gradient bytes |",
             "|---|---|---|---|---|---|---|---|"]
    for (model, ranks), r in sorted(train.items()):
        base = train[(model, 1)]["images_per_s"]
        lines.append(f"| {model} | {ranks} | {r['batch_per_rank']} | {r['images_per_s']:,.0f} | "
                     f"{r['images_per_s'] / (ranks * base):.0%} | {1e3 * r['step_s']:.1f} | "
                     f"{1e3 * r['allreduce_s']:.2f} | {r['gradient_bytes']:,} |")
    lines += ["", "Bare allreduce on 2 ranks (median of 20):", "", "| bytes | ms | GB/s (bytes / time) |",
              "|---|---|---|"]
    lines += [f"| {r['bytes']:,} | {1e3 * r['seconds']:.3f} | {r['bytes'] / r['seconds'] / 1e9:.2f} |"
              for r in records if r["kind"] == "allreduce"]
    lines += ["", "## Expected scaling to 8-64 ranks", "",
              "Per step, one rank computes for the 1-rank step time measured above (packing the gradients included; "
              "its batch stays the same: batch "
              "is per rank), then a ring allreduce moves 2(K-1)/K of the gradient bytes through each rank's link "
              "and takes 2(K-1) latency-bound hops (30 us each on 10 Gbit/s TCP, 5 us on 100 Gbit/s RDMA; assumed, "
              "not measured). xpcnn averages gradients after the whole backward pass (no overlap), so step = compute "
              "+ allreduce; img/s = K x batch / step; efficiency = compute / step. Assumes one rank per machine "
              "(or per GPU-less node) and the network as the only bottleneck.", "",
              "| model | network | ranks | MB moved per rank | allreduce ms (bytes/bandwidth + latency) | compute ms | "
              "img/s | efficiency |", "|---|---|---|---|---|---|---|---|"]
    for model in args.models:
        lines += extrapolate(train[(model, 2)], train[(model, 1)])
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(stem.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
