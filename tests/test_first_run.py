"""A fresh machine's first hour: the README's `pip install -e . && xpcnn train` in a new virtual environment, with
an empty home, no dataset anywhere and no network, trains on the bundled sample and writes every output.

The new environment sees this one's site-packages through a ``.pth`` file, so pip finds every dependency already
installed and needs no index. Two flags make pip's run work offline: ``--no-index`` (nothing may be fetched) and
``--no-build-isolation`` (build isolation would install setuptools from the index into a throwaway environment;
this environment's setuptools builds the editable wheel instead)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def closed_port() -> int:
    """A loopback port nothing listens on (refuses connections)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fresh_environ(home: Path) -> dict[str, str]:
    """This process's environment as a fresh machine would have it: an empty home and cache, no XPCNN_ setting,
    no dataset folder (the system one is an empty folder) and a mirror on a closed port instead of the network."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("XPCNN_") and k not in ("PYTHONPATH", "VIRTUAL_ENV", "MPLCONFIGDIR", "XDG_CACHE_HOME")}
    (home / "no-datasets").mkdir(parents=True)
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), XPCNN_SYSTEM_DATA=str(home / "no-datasets"),
               XPCNN_MIRROR=f"http://127.0.0.1:{closed_port()}/")
    return env


def make_venv(folder: Path) -> Path:
    """A new virtual environment at ``folder`` whose site-packages also holds this one's; its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=120)
    python = folder / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    ours = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    (Path(site) / "zz-outer-site-packages.pth").write_text("".join(f"{path}\n" for path in ours))
    return python


@pytest.fixture(scope="module")
def first_run(tmp_path_factory) -> dict:
    """Install the checkout into a fresh environment and run `xpcnn train` there once, timing both."""
    base = tmp_path_factory.mktemp("fresh")
    env = fresh_environ(base / "home")
    started = time.perf_counter()
    python = make_venv(base / "venv")
    install = subprocess.run([python, "-m", "pip", "install", "--no-index", "--no-build-isolation", "-e", "."],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    installed = time.perf_counter()
    assert install.returncode == 0, install.stdout + install.stderr
    where = subprocess.run([python, "-c", "import xpcnn; print(xpcnn.__file__)"], cwd=base, env=env,
                           capture_output=True, text=True, timeout=120)
    work = base / "work"
    work.mkdir()
    train = subprocess.run([python.parent / "xpcnn", "train"], cwd=work, env=env, capture_output=True, text=True,
                           timeout=600)
    return {"install": install, "where": where, "train": train, "work": work,
            "install_s": installed - started, "train_s": time.perf_counter() - installed}


@pytest.mark.slow
def test_install_and_train_offline_on_a_fresh_machine(first_run) -> None:
    install, train = first_run["install"], first_run["train"]
    assert "Successfully uninstalled xpcnn" not in install.stdout  # the outer environment's xpcnn is left alone
    assert Path(first_run["where"].stdout.strip()) == ROOT / "xpcnn" / "__init__.py", first_run["where"].stderr
    timing = f"install {first_run['install_s']:.0f} s, train {first_run['train_s']:.0f} s"
    assert train.returncode == 0, f"{timing}\n{train.stderr}"
    assert "Traceback" not in train.stderr
    said = [line for line in train.stderr.splitlines() if "full MNIST is not on this machine" in line]
    assert len(said) == 1 and "connection refused" in said[0] and "--dataset mnist-sample" in said[0], train.stderr
    result = [json.loads(line) for line in train.stdout.splitlines() if line.startswith('{"test_accuracy"')]
    assert result and result[0]["test_accuracy"] > 0.9, f"{timing}\n{train.stdout}"
    out = first_run["work"] / "runs" / "seed-deep-mnist-sample"
    expected = {"last.npz", "best.npz", "history.jsonl"}
    if importlib.util.find_spec("matplotlib") is not None:
        expected |= {"history.png", "recall.png"}
    assert expected <= {p.name for p in out.iterdir()}, f"{timing}: {sorted(p.name for p in out.iterdir())}"
    assert len((out / "history.jsonl").read_text().splitlines()) == 3  # the default 3 epochs
    print(f"fresh machine: {timing}")


def test_wheel_carries_the_sample(tmp_path: Path) -> None:
    """A non-editable install (`pip install .`, a wheel) ships the bundled sample and its credits as package data."""
    source = tmp_path / "src"  # a copy, so that the build leaves nothing in the checkout
    shutil.copytree(ROOT / "xpcnn", source / "xpcnn", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-index", "--no-build-isolation",
                            "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    with zipfile.ZipFile(next((tmp_path / "dist").glob("xpcnn-*.whl"))) as wheel:
        names = set(wheel.namelist())
    assert {"xpcnn/data/sample/t10k-images-idx3-ubyte.gz", "xpcnn/data/sample/t10k-labels-idx1-ubyte.gz",
            "xpcnn/data/sample/README.md"} <= names
