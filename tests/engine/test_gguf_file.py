"""GGUF access: agreement with gguf.GGUFReader, and a clear error for each broken file."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFReader
from gguf.constants import GGUFValueType

from engine.errors import GGUFError
from engine.gguf_file import open_gguf
from engine.tools.synth import write_synthetic_gguf


def _reader_value(field):
    """A metadata value as gguf.GGUFReader decodes it."""
    if field.types[0] == GGUFValueType.ARRAY:
        if field.types[-1] == GGUFValueType.STRING:
            return [bytes(field.parts[i]).decode("utf-8", "replace") for i in field.data]
        return [field.parts[i].tolist()[0] for i in field.data]
    if field.types[0] == GGUFValueType.STRING:
        return bytes(field.parts[field.data[0]]).decode("utf-8", "replace")
    return field.parts[field.data[0]].tolist()[0]


def _assert_matches_reader(path: Path) -> None:
    reader = GGUFReader(path)
    with open_gguf(path) as model:
        for key, field in reader.fields.items():
            if key.startswith("GGUF."):
                continue
            ours = model.metadata[key]
            ours = ours.tolist() if isinstance(ours, np.ndarray) else ours
            theirs = _reader_value(field)
            if isinstance(theirs, float):
                assert ours == pytest.approx(theirs), key
            else:
                assert ours == theirs, key
        assert len(model.tensors) == len(reader.tensors)
        for rt in reader.tensors:
            t = model.tensor(rt.name)
            assert t.ggml_type == rt.tensor_type
            assert t.shape == tuple(int(x) for x in reversed(rt.shape))
            assert t.n_bytes == rt.n_bytes
            assert t.offset == rt.data_offset
            assert np.array_equal(model.raw(rt.name), np.asarray(rt.data).reshape(-1).view(np.uint8))


def test_smollm2_metadata_and_tensors_match_gguf_reader(smollm2_path):
    _assert_matches_reader(smollm2_path)


@pytest.mark.parametrize("shape", ["tiny-deepseek-v3", "tiny-qwen3moe"])
def test_synthetic_metadata_and_tensors_match_gguf_reader(tmp_path, shape):
    _assert_matches_reader(write_synthetic_gguf(tmp_path / "m.gguf", shape, qtype="Q4_K"))


def test_views_are_zero_copy_and_shaped(smollm2_path):
    with open_gguf(smollm2_path) as model:
        norm = model.view("blk.0.attn_norm.weight")
        assert norm.dtype == np.float32 and norm.shape == (576,)
        assert not norm.flags.owndata and not norm.flags.writeable
        q = model.view("blk.0.attn_q.weight")  # Q4_1: 32 values in 20 bytes
        assert q.dtype == np.uint8 and q.shape == (576, 576 // 32 * 20)


def test_split_set_opens_from_any_part_and_directory(tmp_path):
    first = write_synthetic_gguf(tmp_path / "set.gguf", "tiny-deepseek-v3", split_max_size=1_500_000)
    parts = sorted(tmp_path.glob("set-*.gguf"))
    assert len(parts) > 2 and first == parts[0]
    whole = write_synthetic_gguf(tmp_path / "whole" / "one.gguf", "tiny-deepseek-v3")
    with open_gguf(whole) as ref:
        for opened in (open_gguf(parts[0]), open_gguf(parts[-1]), open_gguf(tmp_path)):
            with opened as model:
                assert len(model.files) == len(parts)
                assert set(model.tensors) == set(ref.tensors)
                for name in ref.tensors:
                    assert np.array_equal(model.raw(name), ref.raw(name)), name
                assert model.architecture == "deepseek2"


@pytest.fixture
def tiny(tmp_path) -> Path:
    return write_synthetic_gguf(tmp_path / "tiny.gguf", "tiny-llama")


def _tensor_region(path: Path):
    with open_gguf(path) as model:
        infos = sorted(model.tensors.values(), key=lambda t: t.offset)
        return model.files[0].data_offset, infos


def test_wrong_path(tmp_path):
    with pytest.raises(GGUFError, match="no such file or directory"):
        open_gguf(tmp_path / "missing.gguf")


def test_empty_directory(tmp_path):
    with pytest.raises(GGUFError, match="no .gguf file"):
        open_gguf(tmp_path)


def test_wrong_magic(tiny):
    data = bytearray(tiny.read_bytes())
    data[:4] = b"GGML"
    tiny.write_bytes(data)
    with pytest.raises(GGUFError, match=r"tiny.gguf: not a GGUF file"):
        open_gguf(tiny)


def test_unsupported_version(tiny):
    data = bytearray(tiny.read_bytes())
    data[4:8] = struct.pack("<I", 99)
    tiny.write_bytes(data)
    with pytest.raises(GGUFError, match="version 99 is not supported"):
        open_gguf(tiny)


def test_truncated_in_tensor_data(tiny):
    data = tiny.read_bytes()
    tiny.write_bytes(data[: len(data) - 1000])
    with pytest.raises(GGUFError, match=r"runs past the end of the file.*truncated"):
        open_gguf(tiny)


def test_truncated_in_header(tiny):
    tiny.write_bytes(tiny.read_bytes()[:200])
    with pytest.raises(GGUFError, match="ends inside its header"):
        open_gguf(tiny)


def test_tiny_file(tmp_path):
    p = tmp_path / "x.gguf"
    p.write_bytes(b"GGUF")
    with pytest.raises(GGUFError, match="too short"):
        open_gguf(p)


def _patch_tensor_record(path: Path, name: str, patch) -> None:
    """Rewrite one tensor record's fields in place (name bytes stay the same)."""
    data = bytearray(path.read_bytes())
    key = struct.pack("<Q", len(name)) + name.encode()
    pos = data.index(key) + len(key)
    n_dims = struct.unpack_from("<I", data, pos)[0]
    dims_at = pos + 4
    type_at = dims_at + 8 * n_dims
    offset_at = type_at + 4
    patch(data, dims_at, type_at, offset_at)
    path.write_bytes(data)


def test_tensor_past_end_of_file(tiny):
    def move_far(data, dims_at, type_at, offset_at):
        struct.pack_into("<Q", data, offset_at, 1 << 40)

    _patch_tensor_record(tiny, "blk.0.attn_q.weight", move_far)
    with pytest.raises(GGUFError, match="'blk.0.attn_q.weight'.*runs past the end"):
        open_gguf(tiny)


def test_misaligned_tensor(tiny):
    def misalign(data, dims_at, type_at, offset_at):
        off = struct.unpack_from("<Q", data, offset_at)[0]
        struct.pack_into("<Q", data, offset_at, off + 1)

    _patch_tensor_record(tiny, "blk.0.attn_q.weight", misalign)
    with pytest.raises(GGUFError, match="not a multiple of the file's alignment"):
        open_gguf(tiny)


def test_unknown_tensor_type(tiny):
    def bad_type(data, dims_at, type_at, offset_at):
        struct.pack_into("<I", data, type_at, 250)

    _patch_tensor_record(tiny, "blk.0.attn_q.weight", bad_type)
    with pytest.raises(GGUFError, match="unknown ggml type 250"):
        open_gguf(tiny)


def test_duplicate_tensor_name(tiny):
    # Rename blk.1.attn_q.weight to blk.0.attn_q.weight (same length) in the tensor table.
    data = bytearray(tiny.read_bytes())
    key = struct.pack("<Q", 19) + b"blk.1.attn_q.weight"
    pos = data.index(key)
    data[pos + 8 : pos + 8 + 19] = b"blk.0.attn_q.weight"
    tiny.write_bytes(data)
    with pytest.raises(GGUFError, match="'blk.0.attn_q.weight' appears twice"):
        open_gguf(tiny)


@pytest.fixture
def split_set(tmp_path) -> list[Path]:
    write_synthetic_gguf(tmp_path / "M.gguf", "tiny-deepseek-v3", split_max_size=1_500_000)
    return sorted(tmp_path.glob("M-*.gguf"))


def test_missing_split_part(split_set):
    split_set[1].unlink()
    n = len(split_set)
    with pytest.raises(
        GGUFError, match=rf"part 2 of {n} missing: expected M-00002-of-{n:05d}.gguf next to part 1"
    ):
        open_gguf(split_set[0])


def test_split_part_from_another_set(split_set, tmp_path):
    other = tmp_path / "other"
    write_synthetic_gguf(other / "M.gguf", "tiny-deepseek-v3", split_max_size=700_000)
    foreign = sorted(other.glob("M-*.gguf"))[1]
    shutil.copy(foreign, split_set[1])
    with pytest.raises(GGUFError, match="parts from different sets are mixed|another set"):
        open_gguf(split_set[0])


def test_split_part_renamed_from_single_file(split_set, tmp_path):
    single = write_synthetic_gguf(tmp_path / "single.gguf", "tiny-llama")
    shutil.copy(single, split_set[2])
    with pytest.raises(GGUFError, match="carries no split.no/split.count"):
        open_gguf(split_set[0])


def test_directory_with_two_models(tmp_path):
    write_synthetic_gguf(tmp_path / "a.gguf", "tiny-llama")
    write_synthetic_gguf(tmp_path / "b.gguf", "tiny-llama")
    with pytest.raises(GGUFError, match="more than one model"):
        open_gguf(tmp_path)
