"""IDX parsing of real and hand-corrupted files, the bundled sample, dataset search order and messages, and
verified downloads that give up within seconds without a network (loopback only)."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import socket
import threading
import time
from contextlib import closing
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


def test_bundled_sample_is_mnists_test_set() -> None:
    """The package's sample holds exactly MNIST's published t10k files."""
    for part in datasets.TEST_PARTS:
        path = datasets.SAMPLE_DIR / (datasets.FILES[part] + ".gz")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert digest == datasets.DATASETS["mnist"].sha256[part] == datasets.DATASETS["mnist-sample"].sha256[part]


def test_load_mnist_sample(mnist_dir: Path) -> None:
    train, test = datasets.load("mnist-sample")
    assert (len(train), len(test)) == (8000, 2000)
    assert train.images.shape == (8000, 28, 28) and train.images.dtype == np.uint8 and test.labels.dtype == np.int64
    assert train.labels[:5].tolist() == [7, 2, 1, 0, 4]
    everything = datasets.load_test_only("mnist", mnist_dir)
    np.testing.assert_array_equal(test.labels, everything.labels[8000:])  # a fixed split: first 8,000 / last 2,000
    np.testing.assert_array_equal(datasets.load_test_only("mnist-sample").images, test.images)
    assert set(np.unique(test.labels)) == set(range(10))


def test_splits_know_their_dataset(mnist_dir: Path) -> None:
    train, test = datasets.load("mnist-sample")
    assert train.dataset == test.dataset == "mnist-sample" and train.take(10, 20).dataset == "mnist-sample"
    assert datasets.load_test_only("mnist", mnist_dir).take(0, 5).dataset == "mnist"
    assert datasets.Split(train.images[:2], train.labels[:2]).dataset is None
    sample, mnist = datasets.dataset_info("mnist-sample"), datasets.dataset_info("mnist")
    assert (sample.mean, sample.std, sample.classes) == (mnist.mean, mnist.std, mnist.classes)


def test_mnist_sample_reads_no_folder(mnist_dir: Path) -> None:
    with pytest.raises(DataError, match="bundled with xpcnn and reads no folder: drop --data-dir"):
        datasets.load("mnist-sample", mnist_dir)


def test_fashion_mnist_from_the_system_folder(tmp_path: Path, monkeypatch) -> None:
    """Debian's dataset-fashion-mnist is found where it installs; the real one is loaded too where it is installed."""
    monkeypatch.delenv("XPCNN_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XPCNN_SYSTEM_DATA", str(tmp_path / "share"))
    write_fake_dataset(tmp_path / "share" / "fashion-mnist")
    train, test = datasets.load("fashion-mnist", download=False)
    assert (len(train), len(test), train.dataset) == (3, 3, "fashion-mnist")
    monkeypatch.delenv("XPCNN_SYSTEM_DATA")
    if (Path(datasets.SYSTEM_DATA) / "fashion-mnist" / "train-images-idx3-ubyte.gz").exists():
        train, test = datasets.load("fashion-mnist", download=False)  # apt-get install dataset-fashion-mnist
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


def closed_port() -> int:
    """A loopback port nothing listens on (refuses connections)."""
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_fake_dataset(folder: Path, parts=tuple(datasets.FILES)) -> None:
    """Tiny IDX files (3 blank images) under the names of ``parts``."""
    folder.mkdir(parents=True, exist_ok=True)
    for part in parts:
        array = np.zeros((3, 28, 28) if part.endswith("images") else (3,), np.uint8)
        write_idx(folder / (datasets.FILES[part] + ".gz"), array)


@pytest.fixture
def offline(tmp_path: Path, monkeypatch) -> Path:
    """No dataset anywhere and no network: an empty cache, XPCNN_DATA and system folder, a closed mirror."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XPCNN_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("XPCNN_SYSTEM_DATA", str(tmp_path / "system"))
    monkeypatch.setenv("XPCNN_MIRROR", f"http://127.0.0.1:{closed_port()}/")
    return tmp_path


def test_missing_dataset_names_every_place(offline: Path) -> None:
    with pytest.raises(DataError) as info:
        datasets.load("mnist")
    message = str(info.value)
    for place in (offline / "env" / "mnist", offline / "cache" / "xpcnn" / "mnist", offline / "system" / "mnist"):
        assert str(place) in message
    assert "--data-dir" in message and "download failed" in message


def test_system_folder_defaults_to_debians(monkeypatch) -> None:
    monkeypatch.delenv("XPCNN_SYSTEM_DATA", raising=False)
    assert datasets.search_dirs("mnist")[-1] == Path("/usr/share/datasets/mnist")
    monkeypatch.setenv("XPCNN_SYSTEM_DATA", "")
    assert all("datasets" not in str(d) for d in datasets.search_dirs("mnist"))


def test_missing_dataset_says_in_one_line_what_is_here(offline: Path) -> None:
    """The error names the download's failure in a few words and the flags of every dataset found here."""
    write_fake_dataset(offline / "system" / "fashion-mnist")
    write_fake_dataset(offline / "env" / "mnist", datasets.TEST_PARTS)  # only MNIST's test files
    started = time.perf_counter()
    with pytest.raises(DataError) as info:
        datasets.load("mnist")
    assert time.perf_counter() - started < 3
    message = str(info.value)
    assert "\n" not in message and "HTTPConnectionPool" not in message and "Max retries" not in message
    assert "download failed: could not download train-images-idx3-ubyte.gz (127.0.0.1:" in message
    assert ": connection refused)" in message
    assert "--dataset mnist-sample (bundled: 8,000 train / 2,000 test images)" in message
    assert f"--dataset fashion-mnist (in {offline / 'system' / 'fashion-mnist'})" in message
    assert f"--dataset mnist --data-dir {offline / 'env' / 'mnist'} --split-test-set N" in message


def test_mnist_or_sample(offline: Path) -> None:
    """xpcnn train's default: the bundled sample offline (saying why), full MNIST once it is here."""
    dataset, why_not = datasets.mnist_or_sample()
    assert dataset == "mnist-sample" and "connection refused" in why_not
    write_fake_dataset(offline / "env" / "mnist")
    assert datasets.mnist_or_sample() == ("mnist", None)


@pytest.fixture
def stalled_server():
    """A loopback port that accepts connections (the kernel completes them) but never answers a request."""
    with closing(socket.socket()) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield f"http://127.0.0.1:{server.getsockname()[1]}/"


@pytest.fixture
def black_hole():
    """A loopback port whose accept queue is full: the kernel drops new connection attempts, like a host behind
    a firewall that drops packets (a connection attempt hangs until its timeout)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    address = server.getsockname()
    clients = []
    for _ in range(8):  # fill the queue; the attempts beyond it hang (non-blocking, so they don't block us)
        client = socket.socket()
        client.setblocking(False)
        client.connect_ex(address)
        clients.append(client)
    yield f"http://127.0.0.1:{address[1]}/"
    for sock in (*clients, server):
        sock.close()


@pytest.mark.parametrize("where", ["refused", "black_hole", "stalled", "unresolvable"])
def test_download_without_network_gives_up_within_seconds(where, tmp_path, monkeypatch, request) -> None:
    """Every way a network can be missing ends a download attempt within the timeouts, never in a long hang."""
    monkeypatch.setattr(datasets, "CONNECT_TIMEOUT", 1.0)
    monkeypatch.setattr(datasets, "READ_TIMEOUT", 1.0)
    mirror = {"refused": lambda: f"http://127.0.0.1:{closed_port()}/",
              "black_hole": lambda: request.getfixturevalue("black_hole"),
              "stalled": lambda: request.getfixturevalue("stalled_server"),
              "unresolvable": lambda: "http://xpcnn-no-such-host.invalid/"}[where]()  # .invalid never resolves
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XPCNN_MIRROR", mirror)
    for proxy in ("http_proxy", "https_proxy", "all_proxy"):  # a proxy would carry the request elsewhere
        monkeypatch.delenv(proxy, raising=False)
        monkeypatch.delenv(proxy.upper(), raising=False)
    started = time.perf_counter()
    with pytest.raises(DataError) as info:
        datasets.fetch(datasets.DATASETS["mnist"], "test_labels")
    elapsed = time.perf_counter() - started
    message = str(info.value)
    assert elapsed < 4, f"{where}: gave up after {elapsed:.1f} s ({message})"
    assert message.startswith("could not download t10k-labels-idx1-ubyte.gz (") and len(message) < 200, message
    expected = {"refused": ["connection refused"], "stalled": ["timed out"], "black_hole": ["within 1 s", "timed out"],
                "unresolvable": ["host name not resolved", "within 1 s"]}  # a name server that never answers: the latter
    assert any(reason in message for reason in expected[where]), message


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
    monkeypatch.setenv("XPCNN_SYSTEM_DATA", "")  # a Debian copy must not stand in for the download
    monkeypatch.delenv("XPCNN_DATA", raising=False)
    split = datasets.load_test_only("mnist")
    assert len(split) == 10000
    cached = tmp_path / "cache" / "xpcnn" / "mnist" / "t10k-labels-idx1-ubyte.gz"
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == datasets.DATASETS["mnist"].sha256["test_labels"]


def test_download_of_a_missing_file_says_http_404(tmp_path: Path, monkeypatch, mirror) -> None:
    served, url = mirror
    (served / "t10k-labels-idx1-ubyte.gz").unlink()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XPCNN_MIRROR", url)
    monkeypatch.setenv("XPCNN_SYSTEM_DATA", "")  # a Debian copy must not stand in for the download
    monkeypatch.delenv("XPCNN_DATA", raising=False)
    with pytest.raises(DataError, match=r"could not download t10k-labels-idx1-ubyte.gz \(127.0.0.1:\d+: HTTP 404\)"):
        datasets.load_test_only("mnist")


def test_download_with_wrong_checksum_is_refused(tmp_path: Path, monkeypatch, mirror) -> None:
    served, url = mirror
    (served / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"tampered"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XPCNN_MIRROR", url)
    monkeypatch.setenv("XPCNN_SYSTEM_DATA", "")  # a Debian copy must not stand in for the download
    monkeypatch.delenv("XPCNN_DATA", raising=False)
    with pytest.raises(DataError, match="SHA-256"):
        datasets.load_test_only("mnist")
    assert not (tmp_path / "cache" / "xpcnn" / "mnist" / "t10k-labels-idx1-ubyte.gz").exists()
