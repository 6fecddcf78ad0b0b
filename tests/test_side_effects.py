"""Importing xpcnn, choosing a backend and training change nothing in the user's process: no
environment variable, no JAX setting, no numba setting, no BLAS thread count (tested in fresh processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import json, os, sys
first = sys.argv[1]
environ = dict(os.environ)
import jax, jax.numpy as jnp
jax_config = dict(jax.config.values)
if first == "numpy":
    import numpy
import xpcnn
import numpy as np
rng = np.random.default_rng(0)
images = rng.integers(0, 256, (16, 28, 28), dtype=np.uint8)
labels = rng.integers(0, 10, 16)
from xpcnn.data.datasets import Split
split = Split(images, labels)
for backend in ("numpy", "jax"):
    model = xpcnn.models.build("seed-simple").to("cpu", backend=backend)
    trainer = xpcnn.Trainer(model, xpcnn.optim.Adam(model), device="cpu", backend=backend, progress=False)
    trainer.fit(split, epochs=1, batch_size=8)
environ_after = dict(os.environ)
import numba
from threadpoolctl import threadpool_info  # imported only now: its import sets KMP_DUPLICATE_LIB_OK
print(json.dumps({
    "environ": sorted(set(environ_after.items()) ^ set(environ.items())),
    "jax_config": sorted(k for k, v in jax.config.values.items() if jax_config.get(k, object()) != v),
    "jax_dtypes": [str(jnp.zeros(2).dtype), str(jnp.arange(2).dtype)],
    "numba_cpu_features": numba.core.config.CPU_FEATURES,
    "blas_threads": [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"],
    "xpcnn": xpcnn.__file__,
}))
"""

BLAS_THREADS = ("import json, numpy\nfrom threadpoolctl import threadpool_info\n"
                "print(json.dumps([lib['num_threads'] for lib in threadpool_info() if lib['user_api'] == 'blas']))")


@pytest.mark.parametrize("first", ["numpy", "xpcnn"])
def test_importing_and_training_leave_the_process_as_it_was(first: str, accelerator: str) -> None:
    if accelerator != "threads2":
        pytest.skip("runs in a fresh process under its environment's settings: once is enough")
    pytest.importorskip("jax")
    pytest.importorskip("threadpoolctl")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XPCNN_", "NUMBA_", "KMP_"))}
    done = subprocess.run([sys.executable, "-c", SCRIPT, first], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["environ"] == []
    assert report["jax_config"] == []
    assert report["jax_dtypes"] == ["float32", "int32"]
    assert report["numba_cpu_features"] is None
    untouched = subprocess.run([sys.executable, "-c", BLAS_THREADS], capture_output=True, text=True, env=env, check=True)
    default = json.loads(untouched.stdout)[0]  # OpenBLAS's thread count in a bare process
    assert report["blas_threads"] and set(report["blas_threads"]) == {default}
