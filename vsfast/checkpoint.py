"""Checkpoints on disk, read tensor by tensor without loading them.

>>> tensors = vsfast.checkpoint.list_tensors("model/")     # name, shape, dtype, file, offset
>>> with vsfast.checkpoint.Checkpoint("model/") as ckpt:
...     w = ckpt.read(tensors[0])                           # a read-only memory map (float32/64)

Formats, recognised by the path:

- a ``.safetensors`` file (https://github.com/huggingface/safetensors, "Format"): an 8-byte
  little-endian header length, a JSON header naming every tensor's dtype, shape and byte range,
  then the tensors' bytes. The header is parsed and checked here (numpy only, no torch); a tensor
  is a view of a memory map of the file, so reading it costs no memory beyond the file's own
  pages, which :meth:`Checkpoint.release` hands back once the tensor is analysed. float32 and
  float64 tensors are read in place; float16 and bfloat16 ones are widened to float32 (a copy of
  that one tensor).
- a directory, or its index JSON: the shards ``transformers``' ``save_pretrained`` writes
  (``model.safetensors.index.json`` mapping every tensor to its shard; ``pytorch_model.bin.index.json``
  for torch shards), or, without an index, every ``*.safetensors`` file in it.
- a torch file (``.pt``, ``.pth``, ``.bin``): a state dict, a mapping of names to tensors,
  loaded with ``torch.load(weights_only=True, mmap=True)`` (needs torch): nothing but tensors is
  unpickled, and tensors are read from a memory map on first use. Anything else is refused with
  the reason; a file in torch's legacy (pre-1.6, non-zip) format cannot be memory-mapped and is
  read whole.

Every error about a file is a :class:`CheckpointError` (a ValueError) whose message starts with
the file's path and says what is wrong with it.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

__all__ = ["Checkpoint", "CheckpointError", "TensorInfo", "list_tensors", "read_tensor"]

TORCH_SUFFIXES = (".pt", ".pth", ".bin")
SAFETENSORS_SUFFIX = ".safetensors"
# The safetensors library refuses headers above 100 MB; a larger length means a corrupt file.
_MAX_HEADER = 100 * 1000 * 1000

# safetensors' dtype names, the names used here (torch's), and their item sizes.
_SAFETENSORS_DTYPES = {
    "F64": ("float64", 8), "F32": ("float32", 4), "F16": ("float16", 2), "BF16": ("bfloat16", 2),
    "F8_E4M3": ("float8_e4m3fn", 1), "F8_E5M2": ("float8_e5m2", 1), "I64": ("int64", 8), "I32": ("int32", 4),
    "I16": ("int16", 2), "I8": ("int8", 1), "U64": ("uint64", 8), "U32": ("uint32", 4), "U16": ("uint16", 2),
    "U8": ("uint8", 1), "BOOL": ("bool", 1),
}
#: The dtypes whose values are read (as float32, or float64 for float64).
FLOAT_DTYPES = ("float64", "float32", "float16", "bfloat16")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read: the message names the file and the cause."""

    def __init__(self, path: str | os.PathLike, cause: str):
        super().__init__(f"{path}: {cause}")
        self.path = Path(path)


def torch_required(what: str) -> ImportError:
    """The error for an operation that needs torch where torch is not installed."""
    return ImportError(f"{what} needs torch: pip install vsfast[torch]")


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a checkpoint, described without reading it.

    ``dtype`` is torch's name for it (``"float32"``, ``"bfloat16"``, ``"int64"``, ...);
    ``offset`` is the byte offset of its first element in ``file`` (its data is the next
    ``nbytes`` bytes, C order, little-endian) for a safetensors file, and None inside a torch
    file, whose tensors only torch can locate.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    file: Path
    offset: int | None
    nbytes: int

    @property
    def ndim(self) -> int:
        return len(self.shape)


# ----------------------------------------------------------------------------- listing


def list_tensors(path: str | os.PathLike) -> list[TensorInfo]:
    """Every tensor of the checkpoint at ``path`` (see the module docstring for the formats),
    without reading any: in file order, then storage order within a file."""
    return _listing(Path(path), {})


def _listing(path: Path, torch_states: dict[Path, dict[str, Any]]) -> list[TensorInfo]:
    """list_tensors; the state dicts of torch files loaded on the way go into torch_states."""
    if path.is_dir() or path.name.endswith(".index.json"):
        return _list_directory(path, torch_states)
    if not path.is_file():
        raise CheckpointError(path, "no such file or directory")
    if path.suffix == SAFETENSORS_SUFFIX:
        return safetensors_header(path)
    if path.suffix in TORCH_SUFFIXES:
        entries = _torch_entries(path)
        torch_states[path] = {info.name: tensor for info, tensor in entries}
        return [info for info, _ in entries]
    raise CheckpointError(path, f"not a checkpoint vsfast reads: expected a {SAFETENSORS_SUFFIX} file, a torch "
                                f"state dict ({', '.join(TORCH_SUFFIXES)}) or a directory of shards")


def safetensors_header(path: Path) -> list[TensorInfo]:
    """The tensors a safetensors file declares, after checking that its header is JSON of the
    documented form and that the tensors' byte ranges tile the data exactly, within the file."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(path, f"not a safetensors file: {size} bytes, too short for its header")
        length = int.from_bytes(head, "little")
        if length > _MAX_HEADER:
            raise CheckpointError(path, f"not a safetensors file: it begins with a header length of {length} bytes")
        if 8 + length > size:
            raise CheckpointError(path, f"truncated or not a safetensors file: its header needs {8 + length} bytes, "
                                        f"the file has {size}")
        raw = f.read(length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(path, f"corrupt safetensors header: not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError(path, f"corrupt safetensors header: expected a JSON object, got {type(header).__name__}")
    header.pop("__metadata__", None)
    start = 8 + length
    infos = sorted((_header_entry(path, name, entry, start) for name, entry in header.items()),
                   key=lambda info: info.offset)
    _check_tiling(path, infos, start, size)
    return infos


def _header_entry(path: Path, name: str, entry: Any, start: int) -> TensorInfo:
    """One tensor's header entry, checked: dtype, shape, and a byte range of the right length."""
    def bad(cause: str) -> CheckpointError:
        return CheckpointError(path, f"corrupt safetensors header: tensor {name!r} {cause}")

    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
        raise bad("needs 'dtype', 'shape' and 'data_offsets'")
    shape, offsets = entry["shape"], entry["data_offsets"]
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        raise bad(f"has shape {shape!r}, expected a list of sizes")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]):
        raise bad(f"has data_offsets {offsets!r}, expected [begin, end] with 0 <= begin <= end")
    dtype, itemsize = _SAFETENSORS_DTYPES.get(entry["dtype"], (str(entry["dtype"]), None))
    nbytes = offsets[1] - offsets[0]
    if itemsize is not None and nbytes != math.prod(shape) * itemsize:
        raise bad(f"of shape {tuple(shape)} and dtype {entry['dtype']} spans {nbytes} bytes, expected "
                  f"{math.prod(shape) * itemsize}")
    return TensorInfo(name, tuple(shape), dtype, path, start + offsets[0], nbytes)


def _check_tiling(path: Path, infos: list[TensorInfo], start: int, size: int) -> None:
    """The tensors' bytes follow one another from the header's end to the file's end, as the
    format requires: a gap, an overlap or a short file is corruption or truncation."""
    end = start
    for info in infos:
        if info.offset != end:
            raise CheckpointError(path, f"corrupt safetensors header: tensor {info.name!r} starts at byte "
                                        f"{info.offset}, expected {end} (the previous tensor's end)")
        end += info.nbytes
    if end > size:
        last = infos[-1].name
        raise CheckpointError(path, f"truncated: tensor {last!r} ends at byte {end}, the file has {size} bytes")
    if end < size:
        raise CheckpointError(path, f"corrupt safetensors file: {size - end} bytes after the last tensor's end")


def _index_file(directory: Path) -> Path | None:
    """The directory's index JSON, safetensors shards preferred to torch ones."""
    found = sorted(directory.glob("*.index.json"))
    for suffix in (SAFETENSORS_SUFFIX, *TORCH_SUFFIXES):
        for index in found:
            if index.name.endswith(f"{suffix}.index.json"):
                return index
    return found[0] if found else None


def _list_directory(path: Path, torch_states: dict[Path, dict[str, Any]]) -> list[TensorInfo]:
    index = path if path.is_file() else _index_file(path) if path.is_dir() else None
    if index is None and not path.exists():
        raise CheckpointError(path, "no such file or directory")
    if index is not None:
        return _list_index(index, torch_states)
    files = sorted(path.glob(f"*{SAFETENSORS_SUFFIX}"))
    if not files:
        files = sorted(p for p in path.iterdir() if p.suffix in TORCH_SUFFIXES)
        if len(files) != 1:
            raise CheckpointError(path, f"no checkpoint in this directory: expected *{SAFETENSORS_SUFFIX} files, "
                                        "an index JSON (save_pretrained's layout) or one torch state dict")
    infos: list[TensorInfo] = []
    seen: dict[str, Path] = {}
    for file in files:
        for info in _listing(file, torch_states):
            if info.name in seen:
                raise CheckpointError(path, f"tensor {info.name!r} is in both {seen[info.name].name} and {file.name}")
            seen[info.name] = file
            infos.append(info)
    return infos


def _list_index(index: Path, torch_states: dict[Path, dict[str, Any]]) -> list[TensorInfo]:
    """The tensors an index JSON maps to its shards, each shard checked for the names it must hold."""
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(index, f"corrupt index: not JSON ({exc})") from None
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(index, "corrupt index: expected a 'weight_map' of tensor names to shard files")
    shards: dict[str, set[str]] = {}
    for name, shard in weight_map.items():
        shards.setdefault(shard, set()).add(name)
    infos: list[TensorInfo] = []
    for shard, names in sorted(shards.items()):
        file = index.parent / shard
        if not file.is_file():
            raise CheckpointError(index, f"shard {shard} is missing (it holds {len(names)} of the tensors)")
        found = {info.name: info for info in _listing(file, torch_states)}
        missing = sorted(names - found.keys())
        if missing:
            raise CheckpointError(file, f"the index maps {len(missing)} tensors to this shard that it does not hold, "
                                        f"the first {missing[0]!r}")
        infos += [info for info in found.values() if info.name in names]
    return infos


# ----------------------------------------------------------------------------- torch files


def _torch_entries(path: Path) -> list[tuple[TensorInfo, Any]]:
    """A torch state dict's tensors, memory-mapped where the format allows, with their infos."""
    try:
        import torch
    except ImportError:
        raise torch_required(f"reading a torch checkpoint ({path})") from None
    state = _torch_load(torch, path)
    if not isinstance(state, dict):
        raise CheckpointError(path, f"not a state dict: it holds a {type(state).__name__}, expected a mapping of "
                                    "names to tensors (save model.state_dict())")
    entries = []
    for name, tensor in state.items():
        if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
            kind = type(tensor).__name__
            raise CheckpointError(path, f"not a state dict: entry {name!r} is of type {kind}, expected tensors only "
                                        "(a training checkpoint? save model.state_dict())")
        dtype = str(tensor.dtype).removeprefix("torch.")
        info = TensorInfo(name, tuple(tensor.shape), dtype, path, None, tensor.numel() * tensor.element_size())
        entries.append((info, tensor))
    return entries


def _torch_load(torch, path: Path):
    """torch.load with weights_only=True (no code runs), memory-mapped unless the file predates
    torch's zip format; its refusals become one line naming the file."""
    import zipfile

    mapped = zipfile.is_zipfile(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mapped)
    except Exception as exc:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError, EOFError, ...
        text = " ".join(str(exc).split())
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        if found:
            raise CheckpointError(path, f"not a state dict: torch.load(weights_only=True) refuses it (it pickles "
                                        f"{found.group(1)}); save model.state_dict() instead of the model") from None
        # torch's own explanation sits between these words; the rest is advice about weights_only=False
        detail = re.search(r"WeightsUnpickler error: (.*?)(?: Check the documentation|$)", text)
        cause = detail.group(1) if detail else f"{type(exc).__name__}: {text}"
        what = "not a readable torch file" if mapped else "not a torch file: no zip archive, nor a legacy torch pickle"
        raise CheckpointError(path, f"{what} ({cause.strip()})") from None


# ----------------------------------------------------------------------------- reading


# How numpy reads each dtype from the file (bfloat16's bits as uint16, widened by _widen).
_NUMPY_DTYPES = {"float64": "<f8", "float32": "<f4", "float16": "<f2", "bfloat16": "<u2", "int64": "<i8",
                 "int32": "<i4", "int16": "<i2", "int8": "i1", "uint64": "<u8", "uint32": "<u4", "uint16": "<u2",
                 "uint8": "u1", "bool": "?"}


def _widen(raw: np.ndarray) -> np.ndarray:
    """bfloat16 values (their bits as uint16) as float32: bfloat16 is float32's upper half."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


class Checkpoint:
    """An open checkpoint: its tensors (:attr:`tensors`, as :func:`list_tensors` lists them)
    read one at a time from memory maps kept open until :meth:`close` (or the end of a
    ``with`` block)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._torch: dict[Path, dict[str, Any]] = {}  # torch files' state dicts, loaded once
        self.tensors = _listing(self.path, self._torch)
        self._by_name = {info.name: info for info in self.tensors}
        self._maps: dict[Path, mmap.mmap] = {}
        self._lock = threading.Lock()  # tensors may be read from several threads

    def __enter__(self) -> "Checkpoint":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def info(self, name: str) -> TensorInfo:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"{self.path}: no tensor {name!r}") from None

    def __iter__(self) -> Iterator[TensorInfo]:
        return iter(self.tensors)

    def read(self, info: TensorInfo | str) -> np.ndarray:
        """The tensor's values as a numpy array of its shape: float32 (float16 and bfloat16
        widened) or float64, read-only. ValueError for a tensor that is not floating-point."""
        info = self.info(info) if isinstance(info, str) else info
        if info.dtype not in FLOAT_DTYPES:
            raise CheckpointError(info.file, f"tensor {info.name!r} has dtype {info.dtype}; vsfast reads "
                                             f"{', '.join(FLOAT_DTYPES)}")
        values = self.read_stored(info)
        return values.astype(np.float32) if values.dtype == np.float16 else values

    def read_stored(self, info: TensorInfo | str) -> np.ndarray:
        """The tensor's values in the dtype they are stored in (bfloat16, which numpy lacks, as
        float32), read-only where they are read in place; ValueError for a dtype numpy lacks."""
        info = self.info(info) if isinstance(info, str) else info
        if info.offset is None:
            return self._read_torch(info)
        if info.dtype not in _NUMPY_DTYPES:
            raise CheckpointError(info.file, f"tensor {info.name!r} has dtype {info.dtype}, which vsfast does not read")
        count = math.prod(info.shape)
        if count == 0:
            return np.zeros(info.shape, _NUMPY_DTYPES[info.dtype] if info.dtype != "bfloat16" else np.float32)
        raw = np.frombuffer(self._map(info.file), dtype=_NUMPY_DTYPES[info.dtype], count=count,
                            offset=info.offset).reshape(info.shape)
        return _widen(raw) if info.dtype == "bfloat16" else raw

    def release(self, info: TensorInfo | str) -> None:
        """Hand back the resident pages of a tensor read from a memory map (they are the file's,
        and read again from it if needed): memory stays a few tensors' worth however many are
        read."""
        info = self.info(info) if isinstance(info, str) else info
        mapped = self._maps.get(info.file)
        if mapped is None or info.offset is None or not hasattr(mapped, "madvise"):
            return
        page = mmap.PAGESIZE
        begin = info.offset // page * page
        mapped.madvise(mmap.MADV_DONTNEED, begin, info.offset + info.nbytes - begin)

    def close(self) -> None:
        for mapped in self._maps.values():
            try:
                mapped.close()
            except BufferError:  # an array still views it: the map closes when that array goes
                pass
        self._maps.clear()
        self._torch.clear()

    def _map(self, file: Path) -> mmap.mmap:
        with self._lock:
            if file not in self._maps:
                with open(file, "rb") as f:
                    self._maps[file] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            return self._maps[file]

    def _read_torch(self, info: TensorInfo) -> np.ndarray:
        tensor = self._torch[info.file][info.name]
        if info.dtype == "bfloat16":
            tensor = tensor.float()
        try:
            return tensor.detach().numpy()
        except TypeError as exc:  # a dtype numpy lacks (float8, complex32, ...)
            raise CheckpointError(info.file, f"tensor {info.name!r}: {exc}") from None


def read_tensor(path: str | os.PathLike, name: str) -> np.ndarray:
    """One tensor of a checkpoint by name (see :meth:`Checkpoint.read`), for callers that need
    only it: the array keeps its memory map open for as long as it lives."""
    ckpt = Checkpoint(path)
    return ckpt.read(ckpt.info(name))
