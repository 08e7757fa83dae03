"""GGUF access over mmap: one file, a split set, or a directory holding one set.

Opening a model reads only the headers (metadata and tensor table); tensor data
stays in the page cache behind zero-copy numpy views. Every check that can fail
raises GGUFError with a message that names the file and says what to do.
"""

from __future__ import annotations

import mmap
import re
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

from engine.errors import GGUFError

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32

# "DeepSeek-R1-UD-IQ1_S-00001-of-00003.gguf" -> stem, part number, part count
SPLIT_NAME = re.compile(r"^(?P<stem>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")

_SCALAR_FORMATS: dict[GGUFValueType, str] = {
    GGUFValueType.UINT8: "<B",
    GGUFValueType.INT8: "<b",
    GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I",
    GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f",
    GGUFValueType.BOOL: "<?",
    GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q",
    GGUFValueType.FLOAT64: "<d",
}
_NUMPY_DTYPES: dict[GGUFValueType, np.dtype] = {
    t: np.dtype(fmt.replace("?", "b1")) for t, fmt in _SCALAR_FORMATS.items()
}
_U64 = struct.Struct("<Q")
# Numeric arrays longer than this stay numpy views instead of Python lists.
_LIST_LIMIT = 64


@dataclass(frozen=True)
class TensorInfo:
    """One tensor record. `shape` is in numpy order (outermost first), the reverse
    of GGUF's ne[] order; `offset` is absolute within `path`."""

    name: str
    ggml_type: GGMLQuantizationType
    shape: tuple[int, ...]
    n_bytes: int
    path: Path
    offset: int

    @property
    def type_name(self) -> str:
        return self.ggml_type.name

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1


class _HeaderCursor:
    """Reads little-endian GGUF header fields from a buffer, with bounds checks."""

    def __init__(self, buf: memoryview, path: Path):
        self.buf = buf
        self.pos = 0
        self.path = path

    def take(self, n: int) -> memoryview:
        end = self.pos + n
        if n < 0 or end > len(self.buf):
            raise GGUFError(
                f"{self.path}: the file ends inside its header (at byte {self.pos}, needs {n} more); "
                "it is truncated or not a GGUF file. Download it again."
            )
        view = self.buf[self.pos : end]
        self.pos = end
        return view

    def scalar(self, vtype: GGUFValueType) -> Any:
        fmt = _SCALAR_FORMATS[vtype]
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def u32(self) -> int:
        return self.scalar(GGUFValueType.UINT32)

    def u64(self) -> int:
        return self.scalar(GGUFValueType.UINT64)

    def string(self) -> str:
        raw = self.take(self.u64())
        try:
            return str(raw, "utf-8")
        except UnicodeDecodeError:
            return bytes(raw).decode("utf-8", errors="replace")

    def strings(self, count: int) -> list[str]:
        """A string array; the hot path of opening a model (vocabularies of 100k+ entries)."""
        buf, pos, unpack = self.buf, self.pos, _U64.unpack_from
        out = []
        try:
            for _ in range(count):
                (n,) = unpack(buf, pos)
                out.append(str(buf[pos + 8 : pos + 8 + n], "utf-8", "replace"))
                pos += 8 + n
        except struct.error:
            pos = len(buf) + 1
        if pos > len(buf):
            self.pos = len(buf)
            self.take(1)  # raises the truncation error
        self.pos = pos
        return out

    def value_type(self) -> GGUFValueType:
        raw = self.u32()
        try:
            return GGUFValueType(raw)
        except ValueError:
            raise GGUFError(
                f"{self.path}: unknown metadata value type {raw} at byte {self.pos - 4}; "
                "the file is corrupt or from a newer format version."
            ) from None

    def value(self, vtype: GGUFValueType) -> Any:
        if vtype == GGUFValueType.STRING:
            return self.string()
        if vtype == GGUFValueType.ARRAY:
            item_type = self.value_type()
            count = self.u64()
            if item_type in _NUMPY_DTYPES:
                dtype = _NUMPY_DTYPES[item_type]
                arr = np.frombuffer(self.take(count * dtype.itemsize), dtype=dtype)
                return arr.tolist() if count <= _LIST_LIMIT else arr
            if item_type == GGUFValueType.STRING:
                return self.strings(count)
            return [self.value(item_type) for _ in range(count)]
        return self.scalar(vtype)


class GGUFFile:
    """One mmapped .gguf file: header, metadata and tensor records."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            fh = open(self.path, "rb")  # noqa: SIM115 - the mmap outlives this scope
        except FileNotFoundError:
            raise GGUFError(f"{self.path}: no such file. Check the path.") from None
        except IsADirectoryError:
            raise GGUFError(f"{self.path}: is a directory; use open_gguf() for directories.") from None
        except PermissionError:
            raise GGUFError(f"{self.path}: permission denied. Make the file readable.") from None
        with fh:
            self.size = fh.seek(0, 2)
            if self.size < 24:
                raise GGUFError(
                    f"{self.path}: only {self.size} bytes, too short to be a GGUF file. Download it again."
                )
            self._mmap = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        self._buf = memoryview(self._mmap)
        self.metadata: dict[str, Any] = {}
        self.metadata_types: dict[str, GGUFValueType] = {}
        self.tensors: list[TensorInfo] = []
        self._parse()

    def _parse(self) -> None:
        cur = _HeaderCursor(self._buf, self.path)
        magic = bytes(cur.take(4))
        if magic != GGUF_MAGIC:
            raise GGUFError(
                f"{self.path}: not a GGUF file (starts with {magic!r}, expected b'GGUF'). "
                "Point moebox at a .gguf model file."
            )
        self.version = cur.u32()
        if self.version not in SUPPORTED_VERSIONS:
            raise GGUFError(
                f"{self.path}: GGUF version {self.version} is not supported "
                f"(supported: {', '.join(map(str, SUPPORTED_VERSIONS))}). Convert it with a current llama.cpp."
            )
        n_tensors = cur.u64()
        n_kv = cur.u64()
        for _ in range(n_kv):
            key = cur.string()
            vtype = cur.value_type()
            self.metadata[key] = cur.value(vtype)
            self.metadata_types[key] = vtype

        self.alignment = int(self.metadata.get("general.alignment", DEFAULT_ALIGNMENT))
        if self.alignment <= 0 or self.alignment & (self.alignment - 1):
            raise GGUFError(f"{self.path}: general.alignment = {self.alignment} is not a power of two.")

        records = []
        for _ in range(n_tensors):
            name = cur.string()
            n_dims = cur.u32()
            if n_dims > 8:
                raise GGUFError(
                    f"{self.path}: tensor {name!r} claims {n_dims} dimensions; the file is corrupt."
                )
            ne = [cur.u64() for _ in range(n_dims)]
            raw_type = cur.u32()
            offset = cur.u64()
            records.append((name, ne, raw_type, offset))

        data_start = -(-cur.pos // self.alignment) * self.alignment
        self.data_offset = data_start
        for name, ne, raw_type, offset in records:
            self.tensors.append(self._tensor_info(name, ne, raw_type, offset, data_start))

    def _tensor_info(
        self, name: str, ne: list[int], raw_type: int, offset: int, data_start: int
    ) -> TensorInfo:
        try:
            ggml_type = GGMLQuantizationType(raw_type)
            block_elems, block_bytes = GGML_QUANT_SIZES[ggml_type]
        except (ValueError, KeyError):
            raise GGUFError(
                f"{self.path}: tensor {name!r} has unknown ggml type {raw_type}; "
                "this file needs a newer moebox or is corrupt."
            ) from None
        if offset % self.alignment:
            raise GGUFError(
                f"{self.path}: tensor {name!r} starts at data offset {offset}, "
                f"not a multiple of the file's alignment {self.alignment}; the file is corrupt."
            )
        n_elements = int(np.prod(ne, dtype=np.int64)) if ne else 1
        if ne and ne[0] % block_elems:
            raise GGUFError(
                f"{self.path}: tensor {name!r} has rows of {ne[0]} values, not a multiple of "
                f"the {ggml_type.name} block size {block_elems}; the file is corrupt."
            )
        n_bytes = n_elements // block_elems * block_bytes
        start = data_start + offset
        if start + n_bytes > self.size:
            raise GGUFError(
                f"{self.path}: tensor {name!r} ({n_bytes} bytes at byte {start}) runs past the end "
                f"of the file ({self.size} bytes); the file is truncated. Download it again."
            )
        return TensorInfo(name, ggml_type, tuple(reversed(ne)), n_bytes, self.path, start)

    def raw(self, info: TensorInfo) -> np.ndarray:
        """The tensor's bytes as a read-only uint8 view into the mmap (no copy)."""
        return np.frombuffer(self._buf, dtype=np.uint8, count=info.n_bytes, offset=info.offset)

    def close(self) -> None:
        """Unmap now if no tensor view is alive; otherwise the last view's release unmaps."""
        try:
            self._buf.release()
            self._mmap.close()
        except BufferError:
            pass


class GGUFModel:
    """A model as one or more GGUF files (split parts) seen as a single tensor table."""

    def __init__(self, files: list[GGUFFile]):
        self.files = files
        self.metadata: dict[str, Any] = {}
        for f in files:  # later parts carry only split.* keys and the tensors' own records
            for k, v in f.metadata.items():
                self.metadata.setdefault(k, v)
        self.tensors: dict[str, TensorInfo] = {}
        self._file_of: dict[str, GGUFFile] = {}
        for f in files:
            for t in f.tensors:
                if t.name in self.tensors:
                    first = self.tensors[t.name].path
                    raise GGUFError(
                        f"{f.path}: tensor {t.name!r} appears twice "
                        f"(also in {first.name}); the file or split set is corrupt."
                    )
                self.tensors[t.name] = t
                self._file_of[t.name] = f

    @property
    def path(self) -> Path:
        return self.files[0].path

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", ""))

    @property
    def n_bytes(self) -> int:
        return sum(t.n_bytes for t in self.tensors.values())

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    def require(self, key: str) -> Any:
        try:
            return self.metadata[key]
        except KeyError:
            raise GGUFError(
                f"{self.path}: metadata key {key!r} is missing; the file is incomplete."
            ) from None

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def __iter__(self) -> Iterator[TensorInfo]:
        return iter(self.tensors.values())

    def tensor(self, name: str) -> TensorInfo:
        try:
            return self.tensors[name]
        except KeyError:
            raise GGUFError(f"{self.path}: tensor {name!r} is missing from the model.") from None

    def raw(self, name: str) -> np.ndarray:
        """Zero-copy uint8 view of a tensor's bytes in its file's mmap."""
        info = self.tensor(name)
        return self._file_of[name].raw(info)

    def view(self, name: str) -> np.ndarray:
        """Zero-copy numpy view in the tensor's shape.

        Float types (F32, F16, BF16 as uint16, I8..I64, F64) come as their dtype;
        block-quantized types as uint8 rows: shape[:-1] + (bytes per row,).
        """
        info = self.tensor(name)
        raw = self.raw(name)
        dtype = _PLAIN_DTYPES.get(info.ggml_type)
        if dtype is not None:
            return raw.view(dtype).reshape(info.shape)
        block_elems, block_bytes = GGML_QUANT_SIZES[info.ggml_type]
        row_bytes = info.shape[-1] // block_elems * block_bytes
        return raw.reshape(*info.shape[:-1], row_bytes)

    def close(self) -> None:
        for f in self.files:
            f.close()

    def __enter__(self) -> GGUFModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_PLAIN_DTYPES: Mapping[GGMLQuantizationType, np.dtype] = {
    GGMLQuantizationType.F32: np.dtype("<f4"),
    GGMLQuantizationType.F16: np.dtype("<f2"),
    GGMLQuantizationType.BF16: np.dtype("<u2"),
    GGMLQuantizationType.F64: np.dtype("<f8"),
    GGMLQuantizationType.I8: np.dtype("i1"),
    GGMLQuantizationType.I16: np.dtype("<i2"),
    GGMLQuantizationType.I32: np.dtype("<i4"),
    GGMLQuantizationType.I64: np.dtype("<i8"),
}


def _split_part_paths(path: Path) -> list[Path]:
    """All part paths of the split set `path` belongs to, in order; [path] if not split."""
    m = SPLIT_NAME.match(path.name)
    if not m:
        return [path]
    count = int(m["count"])
    if count < 1:
        raise GGUFError(f"{path}: split name says 0 parts; rename the file.")
    return [path.with_name(f"{m['stem']}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]


def _resolve_directory(directory: Path) -> Path:
    ggufs = sorted(p for p in directory.iterdir() if p.suffix == ".gguf" and p.is_file())
    if not ggufs:
        raise GGUFError(f"{directory}: no .gguf file in this directory. Put the model's GGUF file(s) there.")
    sets: dict[str, Path] = {}
    for p in ggufs:
        m = SPLIT_NAME.match(p.name)
        key = m["stem"] if m else p.stem
        if key not in sets or (m and m["no"] == "00001"):
            sets[key] = p
    if len(sets) > 1:
        names = ", ".join(sorted(sets))
        raise GGUFError(
            f"{directory}: holds more than one model ({names}); point moebox at one file instead."
        )
    return next(iter(sets.values()))


def open_gguf(path: str | Path) -> GGUFModel:
    """Open a .gguf file, any part of a split set, or a directory holding one set."""
    path = Path(path).expanduser()
    if not path.exists():
        raise GGUFError(f"{path}: no such file or directory. Check the model path.")
    if path.is_dir():
        path = _resolve_directory(path)
    parts = _split_part_paths(path)
    if len(parts) > 1:
        for i, part in enumerate(parts, 1):
            if not part.exists():
                raise GGUFError(
                    f"{path}: part {i} of {len(parts)} missing: expected {part.name} "
                    f"next to part 1 in {part.parent}. Download the whole set."
                )
    files: list[GGUFFile] = []
    try:
        for part in parts:
            files.append(GGUFFile(part))
        if len(parts) > 1:
            _check_split_set(files)
        return GGUFModel(files)
    except BaseException:
        for f in files:
            f.close()
        raise


def _check_split_set(files: list[GGUFFile]) -> None:
    count = len(files)
    expected_tensors = files[0].metadata.get("split.tensors.count")
    for i, f in enumerate(files):
        no = f.metadata.get("split.no")
        n = f.metadata.get("split.count")
        if no is None or n is None:
            raise GGUFError(
                f"{f.path}: named as part {i + 1} of {count} but carries no split.no/split.count "
                "metadata; it is not from this split set. Download the set again."
            )
        if int(n) != count or int(no) != i:
            raise GGUFError(
                f"{f.path}: says it is part {int(no) + 1} of {int(n)}, but its name says part "
                f"{i + 1} of {count}; parts from different sets are mixed. Download the set again."
            )
        if f.metadata.get("split.tensors.count") != expected_tensors:
            raise GGUFError(
                f"{f.path}: split.tensors.count differs from part 1; parts from different "
                "sets are mixed. Download the set again."
            )
    total = sum(len(f.tensors) for f in files)
    if expected_tensors is not None and total != int(expected_tensors):
        raise GGUFError(
            f"{files[0].path}: the set holds {total} tensors but part 1 announces "
            f"{int(expected_tensors)}; a part is truncated or from another set."
        )
