"""vsfast.checkpoint: safetensors headers against the safetensors library, torch state dicts,
shard directories, and every way a file can be broken, each an error naming the file."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest

from vsfast.checkpoint import Checkpoint, CheckpointError, list_tensors, read_tensor

safetensors_numpy = pytest.importorskip("safetensors.numpy")


def arrays(rng) -> dict[str, np.ndarray]:
    return {
        "dense.weight": rng.standard_normal((7, 5)).astype(np.float32),
        "conv.weight": rng.standard_normal((4, 3, 2, 2)).astype(np.float16),
        "double": rng.standard_normal((3, 3)),
        "bias": rng.standard_normal(7).astype(np.float32),
        "ids": np.arange(6, dtype=np.int64).reshape(2, 3),
        "empty": np.zeros((0, 4), np.float32),
    }


def test_header_and_values_match_the_safetensors_library(tmp_path, rng):
    from safetensors import safe_open

    data = arrays(rng)
    path = tmp_path / "a.safetensors"
    safetensors_numpy.save_file(data, path, metadata={"format": "np"})
    infos = {info.name: info for info in list_tensors(path)}
    assert infos.keys() == data.keys()
    raw = path.read_bytes()
    with safe_open(path, framework="np") as f, Checkpoint(path) as reader:
        for name, info in infos.items():
            expected = f.get_tensor(name)
            assert info.shape == expected.shape and info.dtype == expected.dtype.name
            assert info.file == path and info.nbytes == expected.nbytes
            # The offset is where the tensor's bytes are.
            little_endian = expected.astype(expected.dtype.newbyteorder("<"))
            assert raw[info.offset:info.offset + info.nbytes] == little_endian.tobytes()
            np.testing.assert_array_equal(reader.read_stored(info), expected)
            if expected.dtype.kind == "f":
                got = reader.read(info)
                assert got.dtype == (np.float64 if expected.dtype == np.float64 else np.float32)
                np.testing.assert_array_equal(got, expected.astype(got.dtype))
        with pytest.raises(CheckpointError, match="'ids' has dtype int64"):
            reader.read("ids")
        with pytest.raises(KeyError, match="no tensor 'nope'"):
            reader.info("nope")


def test_bfloat16_is_widened_exactly(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    t = torch.randn(6, 5).to(torch.bfloat16)
    save_file({"w": t}, tmp_path / "b.safetensors")
    (info,) = list_tensors(tmp_path / "b.safetensors")
    assert info.dtype == "bfloat16" and info.nbytes == 60
    np.testing.assert_array_equal(read_tensor(tmp_path / "b.safetensors", "w"), t.float().numpy())


def test_release_hands_pages_back_and_values_stay(tmp_path, rng):
    a = rng.standard_normal((256, 1024)).astype(np.float32)
    safetensors_numpy.save_file({"a": a}, tmp_path / "c.safetensors")
    with Checkpoint(tmp_path / "c.safetensors") as reader:
        first = np.array(reader.read("a"))
        reader.release("a")
        np.testing.assert_array_equal(reader.read("a"), first)
        np.testing.assert_array_equal(first, a)


def write_header(path: Path, header: dict, data: bytes) -> None:
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


@pytest.mark.parametrize("header, data, message", [
    ({"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}, b"\0" * 12, "truncated: tensor 'a' ends at"),
    ({"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 12]}}, b"\0" * 12, "spans 12 bytes, expected 16"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8, "starts at byte .*, expected"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 8, "4 bytes after the last tensor"),
    ({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4, "shape \\[-1\\]"),
    ({"a": {"dtype": "F32", "data_offsets": [0, 4]}}, b"\0" * 4, "needs 'dtype', 'shape' and 'data_offsets'"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}, b"\0" * 4, "data_offsets \\[4, 0\\]"),
    ([1, 2], b"", "expected a JSON object"),
])
def test_broken_safetensors_files_are_named_with_the_cause(tmp_path, header, data, message):
    path = tmp_path / "broken.safetensors"
    write_header(path, header, data)
    with pytest.raises(CheckpointError, match=message) as info:
        list_tensors(path)
    assert str(info.value).startswith(f"{path}: ")


def test_truncated_corrupt_and_foreign_files(tmp_path, rng):
    good = tmp_path / "good.safetensors"
    safetensors_numpy.save_file({"w": rng.standard_normal((8, 8)).astype(np.float32)}, good)
    raw = good.read_bytes()
    cases = {
        "short.safetensors": (raw[:5], "too short for its header"),
        "cut.safetensors": (raw[:-1], "truncated"),
        "cut-header.safetensors": (raw[:20], "truncated or not a safetensors file"),
        "json.safetensors": (raw[:8] + b"{" + b"x" * (len(raw) - 9), "not JSON"),
        "huge.safetensors": (b"\xff" * 8 + raw[8:], "header length"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointError, match=message):
            list_tensors(tmp_path / name)
    with pytest.raises(CheckpointError, match="no such file"):
        list_tensors(tmp_path / "missing.safetensors")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CheckpointError, match="not a checkpoint vsfast reads"):
        list_tensors(tmp_path / "notes.txt")


def test_directory_of_shards_and_its_index(tmp_path, rng):
    parts = {"s1.safetensors": {"a": rng.standard_normal((3, 4)).astype(np.float32)},
             "s2.safetensors": {"b": rng.standard_normal((5, 2)).astype(np.float32), "c": np.ones(3, np.float32)}}
    for name, data in parts.items():
        safetensors_numpy.save_file(data, tmp_path / name)
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": {"a": "s1.safetensors", "b": "s2.safetensors",
                                                                 "c": "s2.safetensors"}}))
    assert [(i.name, i.file.name) for i in list_tensors(tmp_path)] == [("a", "s1.safetensors"),
                                                                        ("b", "s2.safetensors"),
                                                                        ("c", "s2.safetensors")]
    assert [i.name for i in list_tensors(index)] == ["a", "b", "c"]

    index.write_text(json.dumps({"weight_map": {"a": "s1.safetensors", "z": "s3.safetensors"}}))
    with pytest.raises(CheckpointError, match="shard s3.safetensors is missing") as info:
        list_tensors(tmp_path)
    assert str(info.value).startswith(str(index))
    index.write_text(json.dumps({"weight_map": {"a": "s1.safetensors", "q": "s1.safetensors"}}))
    with pytest.raises(CheckpointError, match="does not hold, the first 'q'"):
        list_tensors(tmp_path)
    index.write_text("{broken")
    with pytest.raises(CheckpointError, match="corrupt index"):
        list_tensors(tmp_path)

    index.unlink()  # without an index: every safetensors file, names unique across them
    assert sorted(i.name for i in list_tensors(tmp_path)) == ["a", "b", "c"]
    safetensors_numpy.save_file({"a": np.ones((2, 2), np.float32)}, tmp_path / "s3.safetensors")
    with pytest.raises(CheckpointError, match="tensor 'a' is in both s1.safetensors and s3.safetensors"):
        list_tensors(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint in this directory"):
        list_tensors(tmp_path / "empty")


def test_torch_state_dicts_and_what_is_not_one(tmp_path):
    torch = pytest.importorskip("torch")
    from torch import nn

    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2).to(torch.bfloat16))
    state = model.state_dict()
    torch.save(state, tmp_path / "m.pt")
    infos = list_tensors(tmp_path / "m.pt")
    assert [i.name for i in infos] == list(state)
    assert all(i.offset is None and i.file == tmp_path / "m.pt" for i in infos)
    assert {i.name: i.dtype for i in infos}["2.weight"] == "bfloat16"
    with Checkpoint(tmp_path / "m.pt") as reader:
        np.testing.assert_array_equal(reader.read("0.weight"), state["0.weight"].numpy())
        np.testing.assert_array_equal(reader.read("2.weight"), state["2.weight"].float().numpy())
        assert reader.read_stored("1.num_batches_tracked") == 0

    torch.save(model, tmp_path / "whole.pt")
    torch.save([torch.ones(2)], tmp_path / "list.pt")
    torch.save({"epoch": 3, "model": state}, tmp_path / "training.pth")
    (tmp_path / "junk.bin").write_bytes(b"not a torch file")
    for name, message in [("whole.pt", "refuses it \\(it pickles torch.nn.modules.container.Sequential\\)"),
                          ("list.pt", "holds a list"), ("training.pth", "entry 'epoch' is of type int"),
                          ("junk.bin", "not a torch file")]:
        with pytest.raises(CheckpointError, match=message) as info:
            list_tensors(tmp_path / name)
        assert str(info.value).startswith(str(tmp_path / name))


def test_a_legacy_torch_file_is_read_whole(tmp_path):
    torch = pytest.importorskip("torch")
    w = torch.randn(3, 4)
    torch.save({"w": w}, tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    np.testing.assert_array_equal(read_tensor(tmp_path / "old.pt", "w"), w.numpy())


def test_sizes_follow_the_dtypes(tmp_path, rng):
    data = arrays(rng)
    safetensors_numpy.save_file(data, tmp_path / "d.safetensors")
    for info in list_tensors(tmp_path / "d.safetensors"):
        assert info.nbytes == math.prod(info.shape) * data[info.name].itemsize
        assert info.ndim == data[info.name].ndim
