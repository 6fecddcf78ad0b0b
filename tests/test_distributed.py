"""Data-parallel training (issue 18): the sharding and hooks in one process, then real 2-rank MPI jobs on
loopback (``mpiexec -n 2``, cases in tests/distributed_cases.py): one step equals one process with the global
batch, 2 epochs reach one process's accuracy, and a rank that raises, dies or hangs stops the job."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import xpcnn
from xpcnn.data.datasets import Split
from xpcnn.distributed import LocalCommunicator, Shard
from xpcnn.distributed.data_parallel import resume_step
from xpcnn.distributed.sharding import num_steps, shard_batches
from xpcnn.errors import DistributedError

from conftest import ROOT, selected_accelerators

# -- in one process ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("count, batch, size", [(100, 8, 2), (101, 8, 2), (64, 8, 4), (7, 3, 3), (10, 32, 2)])
def test_training_shards_are_the_global_batches_cut_in_equal_parts(count: int, batch: int, size: int) -> None:
    order = np.random.default_rng(0).permutation(count)
    shards = [list(shard_batches(order, batch, Shard(r, size))) for r in range(size)]
    steps = num_steps(count, batch, Shard(0, size))
    assert all(len(s) == steps for s in shards)  # every rank runs the same number of steps
    single = list(shard_batches(order, batch * size, None))
    for step in range(steps):
        assert len({len(s[step]) for s in shards}) == 1  # equal batches on every rank
        together = np.concatenate([s[step] for s in shards])
        usable = order[:count - count % size]
        assert np.array_equal(together, usable[step * batch * size:(step + 1) * batch * size])
        if count % size == 0 or step < steps - 1:
            assert np.array_equal(together, single[step])  # the images of one process's step with batch K*B
    left_out = set(order) - set(np.concatenate([np.concatenate(s) for s in shards]))
    assert left_out == set(order[count - count % size:])  # the remainder: the permutation's last N % K


@pytest.mark.parametrize("count, batch, size", [(101, 8, 2), (5, 4, 4), (3, 2, 4)])
def test_evaluation_shards_read_every_image_once(count: int, batch: int, size: int) -> None:
    order = np.arange(count)
    seen = np.concatenate([np.concatenate(list(shard_batches(order, batch, Shard(r, size, False))) or [[]])
                           for r in range(size)])
    assert sorted(seen.astype(int).tolist()) == list(range(count))


def test_resume_with_another_world_size_restarts_the_epoch(capsys: pytest.CaptureFixture) -> None:
    assert resume_step({"world_size": 2, "epoch": 1}, 5, 2, True) == 5
    assert resume_step({}, 5, 1, True) == 5  # single-process checkpoints: K = 1
    assert resume_step({"world_size": 2, "epoch": 1}, 0, 4, True) == 0
    assert resume_step({"world_size": 2, "epoch": 1}, 5, 4, True) == 0
    err = capsys.readouterr().err
    assert "written by 2 rank(s) and this run has 4" in err and "epoch 2 restarts from its first batch" in err


def _small(seed: int = 0) -> xpcnn.Sequential:
    from xpcnn.layers import Conv2D, Dense, Flatten, ReLU
    return xpcnn.Sequential([Conv2D(1, 2, 3, seed=(seed, 0)), ReLU(), Flatten(), Dense(2 * 6 * 6, 3, seed=(seed, 1))])


def test_a_world_of_one_trains_as_one_process() -> None:
    rng = np.random.default_rng(0)
    split = Split(rng.integers(0, 256, (40, 8, 8), dtype=np.uint8), rng.integers(0, 3, 40))
    runs = []
    for distributed in (False, LocalCommunicator()):
        model = _small()
        trainer = xpcnn.Trainer(model, xpcnn.optim.SGD(model, lr=0.1), progress=False, distributed=distributed)
        history = trainer.fit(split, split, epochs=2, batch_size=8)
        runs.append((history, [np.asarray(p) for p in model.parameters()], trainer.state_meta()["trainer"]))
    (h1, p1, s1), (h2, p2, s2) = runs
    assert [r["loss"] for r in h1] == [r["loss"] for r in h2]
    assert h1[-1]["val_accuracy"] == h2[-1]["val_accuracy"]
    assert all(np.array_equal(a, b) for a, b in zip(p1, p2))
    assert s1["world_size"] == s2["world_size"] == 1


class SecondRank(LocalCommunicator):
    """Rank 1 of 2 in one process: collectives return their input (rank 0's, as if broadcast)."""

    rank, size = 1, 2


def test_each_rank_draws_its_own_dropout_masks() -> None:
    from xpcnn.layers import Dropout
    seeds = []
    for comm in (LocalCommunicator(), SecondRank(), SecondRank()):
        model = xpcnn.Sequential([Dropout(0.5, seed=11), *_small().layers])
        trainer = xpcnn.Trainer(model, xpcnn.optim.SGD(model, lr=0.1), progress=False, distributed=comm)
        split = Split(np.zeros((8, 8, 8), dtype=np.uint8), np.zeros(8, dtype=np.int64))
        trainer.parallel.start(trainer, 8, 4)
        trainer.parallel.start(trainer, 8, 4)  # a second fit derives nothing more
        seeds.append(model.layers[0].seed)
        model.layers[0].seed = 11  # as restore() sets rank 0's seed: derived again, the same way
        trainer.parallel.start(trainer, len(split), 4)
        assert model.layers[0].seed == seeds[-1]
    assert seeds[0] == 11 and seeds[1] == seeds[2] != 11


def test_distributed_argument_is_checked() -> None:
    with pytest.raises(TypeError, match="distributed must be True, False or"):
        xpcnn.Trainer(_small(), distributed="mpi")


def test_timeout_setting_reads_the_environment() -> None:
    assert xpcnn.settings.from_environ({"XPCNN_DISTRIBUTED_TIMEOUT": "7.5"}).distributed_timeout == 7.5
    with pytest.raises(ValueError, match="XPCNN_DISTRIBUTED_TIMEOUT must be a number"):
        xpcnn.settings.from_environ({"XPCNN_DISTRIBUTED_TIMEOUT": "soon"})
    with pytest.raises(ValueError, match="distributed_timeout must be a positive number"):
        xpcnn.settings.from_environ({"XPCNN_DISTRIBUTED_TIMEOUT": "0"})


def test_without_mpi4py_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from xpcnn.distributed import communicator
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import mpi4py now fails
    monkeypatch.setattr(communicator, "_world", None)
    with pytest.raises(DistributedError, match=r"pip install 'xpcnn\[distributed\]'"):
        communicator.init()


# -- 2 ranks under mpiexec ----------------------------------------------------------------------------------


def mpiexec() -> list[str]:
    """``mpiexec -n 2`` (with Open MPI's root and oversubscribe switches), or skip saying what is missing."""
    pytest.importorskip("mpi4py", reason="mpi4py is not installed: pip install 'xpcnn[distributed]'")
    found = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
    if found is None:
        pytest.skip("no mpiexec here (pip install mpich, or install a system MPI)")
    version = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=30).stdout
    extra = ["--allow-run-as-root", "--oversubscribe"] if "Open MPI" in version or "OpenRTE" in version else []
    return [found, *extra, "-n", "2"]


@pytest.fixture
def once(accelerator: str) -> None:
    """The MPI jobs run in fresh processes under their own settings: once, under the first accelerator."""
    if accelerator != selected_accelerators()[0]:
        pytest.skip("an MPI job in fresh processes: run under the first accelerator setting only")


def run_job(args: list[str], timeout: float = 300, **env: str) -> tuple[subprocess.CompletedProcess, float]:
    environ = {**os.environ, "PYTHONPATH": str(ROOT), "XPCNN_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
               "OMP_NUM_THREADS": "1", "OMPI_ALLOW_RUN_AS_ROOT": "1",
               "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1", **env}
    started = time.monotonic()
    done = subprocess.run([*mpiexec(), sys.executable, *args], capture_output=True, text=True, timeout=timeout,
                          env=environ, cwd=ROOT, stdin=subprocess.DEVNULL)
    return done, time.monotonic() - started


CASES = str(ROOT / "tests" / "distributed_cases.py")


@pytest.mark.parametrize("array_library", ["numpy", "torch"])  # torch: gradients staged through host memory
def test_one_step_on_two_ranks_equals_one_process_with_twice_the_batch(once: None, tmp_path: Path,
                                                                        array_library: str) -> None:
    if array_library != "numpy":
        pytest.importorskip(array_library)
    done, _ = run_job([CASES, "step", str(tmp_path), array_library])
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "step.json").read_text())
    assert report["steps"] == report["single_steps"] == 2
    errors = {k: v for k, v in report.items() if k.startswith(("grad", "weight"))}
    assert len(errors) == 8 and max(errors.values()) < 1e-6, errors  # float64; rank 1 began with other weights
    assert report["loss"][0] == pytest.approx(report["loss"][1], rel=1e-9)


def test_two_epochs_on_two_ranks_reach_one_process_accuracy(once: None, tmp_path: Path) -> None:
    common = ["train", "--dataset", "mnist-sample", "--limit-train", "2000", "--epochs", "2", "--no-progress"]
    done, _ = run_job(["-m", "xpcnn.cli.main", *common, "--distributed", "--batch-size", "32",
                       "--out", str(tmp_path / "two")], timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    single = subprocess.run([sys.executable, "-m", "xpcnn.cli.main", *common, "--batch-size", "64", "--out",
                             str(tmp_path / "one")], capture_output=True, text=True, timeout=600, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert single.returncode == 0, single.stderr[-3000:]
    two, one = json.loads(done.stdout), json.loads(single.stdout)  # rank 0 alone prints the result
    assert abs(two["test_accuracy"] - one["test_accuracy"]) <= 0.01 and two["test_accuracy"] > 0.8
    assert "global batch 64" in done.stderr and done.stderr.count("epoch 2/2") == 1
    assert len((tmp_path / "two" / "history.jsonl").read_text().splitlines()) == 2  # written once, by rank 0


def test_a_rank_that_raises_stops_both_within_30_seconds(once: None, tmp_path: Path) -> None:
    done, seconds = run_job([CASES, "raise", str(tmp_path)], timeout=120)
    assert done.returncode != 0 and seconds < 30
    assert done.stderr.count("RuntimeError: rank 1 fails on purpose") == 1  # printed once
    assert "rank 1 of 2 failed; aborting every rank" in done.stderr


def test_a_killed_rank_does_not_hang_the_other(once: None, tmp_path: Path) -> None:
    done, seconds = run_job([CASES, "kill", str(tmp_path)], timeout=120, XPCNN_DISTRIBUTED_TIMEOUT="10")
    assert done.returncode != 0 and seconds < 10 + 20


def test_a_stopped_rank_is_named_when_the_timeout_passes(once: None, tmp_path: Path) -> None:
    done, seconds = run_job([CASES, "hang", str(tmp_path)], timeout=120, XPCNN_DISTRIBUTED_TIMEOUT="5")
    assert done.returncode != 0 and seconds < 5 + 25
    lines = [line for line in done.stderr.splitlines() if "waited 5 s in collective" in line]
    assert len(lines) == 1 and "no answer from rank 1" in lines[0] and "XPCNN_DISTRIBUTED_TIMEOUT" in lines[0]


def test_ranks_started_differently_stop_before_the_first_step(once: None, tmp_path: Path) -> None:
    done, seconds = run_job([CASES, "mismatch", str(tmp_path)], timeout=120)
    assert done.returncode != 0 and seconds < 30
    lines = [line for line in done.stderr.splitlines() if "another configuration" in line]
    assert len(lines) == 1 and lines[0].startswith("case: error: rank 1 of 2 started with another configuration")


def test_cli_error_on_rank_0_is_one_line_and_stops_every_rank(once: None, tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "last.npz").write_bytes(b"not overwritten")
    done, seconds = run_job(["-m", "xpcnn.cli.main", "train", "--distributed", "--dataset", "mnist-sample",
                             "--limit-train", "64", "--epochs", "1", "--out", str(out), "--no-progress"], timeout=120)
    assert done.returncode != 0 and seconds < 60
    lines = [line for line in done.stderr.splitlines() if "already holds" in line]
    assert len(lines) == 1 and lines[0].startswith("xpcnn train: error: rank 0 of 2: ")
    assert "Traceback" not in done.stderr and (out / "last.npz").read_bytes() == b"not overwritten"


def test_a_mistake_every_rank_makes_is_printed_once(once: None, tmp_path: Path) -> None:
    done, seconds = run_job(["-m", "xpcnn.cli.main", "train", "--distributed", "--dataset", "mnist-sample",
                             "--split-test-set", "100", "--out", str(tmp_path / "run")], timeout=120)
    assert done.returncode != 0 and seconds < 60
    lines = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1 and lines[0].startswith("xpcnn train: error: --dataset mnist-sample is already split")


def test_a_per_batch_schedule_counts_each_ranks_steps(once: None, tmp_path: Path) -> None:
    out = tmp_path / "onecycle"
    done, _ = run_job(["-m", "xpcnn.cli.main", "train", "--distributed", "--dataset", "mnist-sample",
                       "--limit-train", "512", "--batch-size", "32", "--epochs", "2", "--schedule", "onecycle",
                       "--optimizer", "sgd", "--lr", "0.1", "--out", str(out), "--no-progress"], timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    from xpcnn.backend import host
    _, meta = host.load_arrays(out / "last.npz")
    assert meta["training"]["total_steps"] == meta["schedule"]["epoch"] == 2 * 512 // (2 * 32)  # ran to its end
