"""IDX parsing of real and hand-corrupted files, dataset search order, and verified downloads (loopback only)."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from xpcnn.data import datasets
from xpcnn.data.idx import read_idx, write_idx
from xpcnn.errors import DataError


def test_real_mnist_test_set_parses(mnist_dir: Path) -> None:
    images = read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz", expect_ndim=3)
    labels = read_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz", expect_ndim=1)
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and set(np.unique(labels)) == set(range(10))
    assert labels[:5].tolist() == [7, 2, 1, 0, 4]  # the well-known first digits


def test_fashion_mnist_from_debian_if_installed() -> None:
    folder = Path("/usr/share/datasets/fashion-mnist")
    if not (folder / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)")
    train, test = datasets.load("fashion-mnist", download=False)
    assert (len(train), len(test)) == (60000, 10000)


def test_round_trip_raw_and_gzip(tmp_path: Path) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("a-idx3-ubyte", "a-idx3-ubyte.gz"):
        write_idx(tmp_path / name, array)
        np.testing.assert_array_equal(read_idx(tmp_path / name), array)


def test_bad_magic(tmp_path: Path) -> None:
    (tmp_path / "bad").write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(tmp_path / "bad")


def test_truncated_gzip(tmp_path: Path, mnist_dir: Path) -> None:
    raw = (mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes()
    (tmp_path / "cut.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="gzip stream is corrupt or truncated"):
        read_idx(tmp_path / "cut.gz")


def test_wrong_count(tmp_path: Path, mnist_dir: Path) -> None:
    data = gzip.decompress((mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes())
    (tmp_path / "short").write_bytes(data[:-10])  # header still says 10000 labels
    with pytest.raises(DataError, match="header promises .* the file holds 9990"):
        read_idx(tmp_path / "short")


def test_images_and_labels_must_agree(tmp_path: Path) -> None:
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((3, 28, 28), np.uint8))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros((4,), np.uint8))
    with pytest.raises(DataError, match="3 images but .* 4 labels"):
        datasets.load_test_only("mnist", tmp_path)


def test_missing_dataset_names_every_place(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XPCNN_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("XPCNN_MIRROR", "http://127.0.0.1:9/")  # nothing listens on the discard port
    with pytest.raises(DataError) as info:
        datasets.load("mnist")
    message = str(info.value)
    for place in (tmp_path / "env" / "mnist", tmp_path / "cache" / "xpcnn" / "mnist", "/usr/share/datasets/mnist"):
        assert str(place) in message
    assert "--data-dir" in message and "download failed" in message


@pytest.fixture
def mirror(tmp_path: Path, mnist_dir: Path):
    """A loopback HTTP server serving a copy of the real MNIST test files."""
    served = tmp_path / "served"
    served.mkdir()
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (served / name).write_bytes((mnist_dir / name).read_bytes())
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_download_verifies_and_caches(tmp_path: Path, monkeypatch, mirror) -> None:
    _, url = mirror
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XPCNN_MIRROR", url)
    monkeypatch.delenv("XPCNN_DATA", raising=False)
    split = datasets.load_test_only("mnist")
    assert len(split) == 10000
    cached = tmp_path / "cache" / "xpcnn" / "mnist" / "t10k-labels-idx1-ubyte.gz"
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == datasets.DATASETS["mnist"].sha256["test_labels"]


def test_download_with_wrong_checksum_is_refused(tmp_path: Path, monkeypatch, mirror) -> None:
    served, url = mirror
    (served / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"tampered"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XPCNN_MIRROR", url)
    monkeypatch.delenv("XPCNN_DATA", raising=False)
    with pytest.raises(DataError, match="SHA-256"):
        datasets.load_test_only("mnist")
    assert not (tmp_path / "cache" / "xpcnn" / "mnist" / "t10k-labels-idx1-ubyte.gz").exists()
