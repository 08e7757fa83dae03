"""Random GGUF blocks with sane scales, and decoders for the kernels' activation blocks.

Random bytes are valid blocks for every format once the fp16 scale fields hold
modest finite values (random bytes there would give NaN/inf or 1e4-sized scales).
"""

from __future__ import annotations

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

# Byte offsets of the fp16 scale fields inside one block (layouts of ggml-common.h).
FP16_SCALE_OFFSETS: dict[str, tuple[int, ...]] = {
    "Q8_0": (0,),
    "Q4_0": (0,),
    "Q4_1": (0, 2),
    "Q5_0": (0,),
    "Q5_1": (0, 2),
    "Q2_K": (80, 82),
    "Q3_K": (108,),
    "Q4_K": (0, 2),
    "Q5_K": (0, 2),
    "Q6_K": (208,),
    "IQ1_S": (0,),
    "IQ1_M": (),  # its fp16 scale is spread over nibbles: see IQ1_M_SCALE_WORDS
    "IQ2_XXS": (0,),
    "IQ2_XS": (0,),
    "IQ2_S": (0,),
    "IQ3_XXS": (0,),
    "IQ3_S": (0,),
    "IQ4_NL": (0,),
    "IQ4_XS": (0,),
}
# IQ1_M keeps its fp16 scale in the top nibbles of the four uint16 at these bytes.
IQ1_M_SCALE_WORDS = slice(48, 56)
FLOAT_FORMATS = ("F32", "F16", "BF16")
QUANT_FORMATS = tuple(FP16_SCALE_OFFSETS)
ALL_FORMATS = FLOAT_FORMATS + QUANT_FORMATS

Q8_K_DTYPE = np.dtype([("d", "<f4"), ("qs", "i1", 256), ("bsums", "<i2", 16)])
Q8_0_DTYPE = np.dtype([("d", "<f2"), ("qs", "i1", 32)])
Q8_1_DTYPE = np.dtype([("d", "<f4"), ("s", "<f4"), ("qs", "i1", 32)])


def available_isas() -> list[str]:
    """ISA levels the kernels run at on this CPU, lowest first (AVX-512 / AMX only where present)."""
    import moebox_native

    order = ["scalar", "avx2", "avx512", "amx"]
    return order[: order.index(moebox_native.best_isa()) + 1]


def has_amx_kernel(name: str) -> bool:
    """Whether the format has an AMX tile kernel (its prefill then sums in another order than its vec_dot)."""
    import moebox_native

    return any(f["name"] == name and "amx" in f["isas"] for f in moebox_native.formats())


def qtype(name: str) -> GGMLQuantizationType:
    return GGMLQuantizationType[name]


def block_geometry(name: str) -> tuple[int, int]:
    """(elements, bytes) per block."""
    return GGML_QUANT_SIZES[qtype(name)]


def random_weights(name: str, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 [rows, row_bytes]: the bytes of a rows x cols matrix in format `name`."""
    if name == "F32":
        return rng.standard_normal((rows, cols), dtype=np.float32).view(np.uint8)
    if name == "F16":
        return rng.standard_normal((rows, cols)).astype(np.float16).view(np.uint8)
    if name == "BF16":
        f = rng.standard_normal((rows, cols), dtype=np.float32)
        return (f.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
    elems, nbytes = block_geometry(name)
    assert cols % elems == 0
    blocks = rng.integers(0, 256, size=(rows, cols // elems, nbytes), dtype=np.uint8)
    for off in FP16_SCALE_OFFSETS[name]:
        scale = rng.uniform(0.002, 0.02, size=blocks.shape[:2]).astype(np.float16)
        blocks[:, :, off : off + 2] = scale.view(np.uint8).reshape(*blocks.shape[:2], 2)
    if name == "IQ1_M":
        scale = rng.uniform(0.002, 0.02, size=blocks.shape[:2]).astype(np.float16).view(np.uint16)
        words = blocks[:, :, IQ1_M_SCALE_WORDS].copy().view(np.uint16)  # [rows, blocks, 4]
        for k in range(4):
            words[..., k] = (words[..., k] & 0x0FFF) | (((scale >> (4 * k)) & 0xF) << 12)
        blocks[:, :, IQ1_M_SCALE_WORDS] = words.view(np.uint8)
    return blocks.reshape(rows, -1)


def reference_dequantize(name: str, data: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """float64 [rows, cols] from gguf.quants.dequantize (BF16 decoded by bit shift)."""
    from gguf.quants import dequantize

    if name == "BF16":
        bits = data.view(np.uint16).astype(np.uint32) << 16
        return bits.view(np.float32).reshape(rows, cols).astype(np.float64)
    return dequantize(data.reshape(rows, -1), qtype(name)).reshape(rows, cols).astype(np.float64)


def decode_activations(act_type: int, data: np.ndarray, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """(x_hat, d_per_element) float64 [T, cols] from the native activation bytes."""
    rows = data.shape[0]
    if act_type == GGMLQuantizationType.Q8_K:
        b = np.ascontiguousarray(data).view(Q8_K_DTYPE).reshape(rows, -1)
        # bsums must be the sums of each 16 quants
        sums = b["qs"].astype(np.int32).reshape(rows, -1, 16, 16).sum(-1)
        assert np.array_equal(sums, b["bsums"]), "Q8_K bsums wrong"
        d = np.repeat(b["d"].astype(np.float64), 256, axis=1)
        return b["qs"].reshape(rows, cols) * d, d
    if act_type == GGMLQuantizationType.Q8_0:
        b = np.ascontiguousarray(data).view(Q8_0_DTYPE).reshape(rows, -1)
        d = np.repeat(b["d"].astype(np.float64), 32, axis=1)
        return b["qs"].reshape(rows, cols) * d, d
    if act_type == GGMLQuantizationType.Q8_1:
        b = np.ascontiguousarray(data).view(Q8_1_DTYPE).reshape(rows, -1)
        # s must be d * sum(qs), rounded once to float32
        s_ref = (b["d"] * b["qs"].astype(np.int32).sum(-1).astype(np.float32)).astype(np.float32)
        assert np.array_equal(b["s"], s_ref), "Q8_1 block sums wrong"
        d = np.repeat(b["d"].astype(np.float64), 32, axis=1)
        return b["qs"].reshape(rows, cols) * d, d
    x = np.ascontiguousarray(data).view(np.float32).reshape(rows, cols).astype(np.float64)
    return x, np.zeros_like(x)
