"""`moebox doctor`: what this machine offers moebox (CPU features, RAM, GPU, torch)."""

from __future__ import annotations

import os
import platform

import psutil

from engine.errors import NativeUnavailableError

_CPU_FLAGS = (
    ("avx2", "AVX2"),
    ("fma", "FMA"),
    ("f16c", "F16C"),
    ("avx512f", "AVX-512 F"),
    ("avx512bw", "AVX-512 BW"),
    ("avx512vl", "AVX-512 VL"),
    ("avx512_vnni", "AVX-512 VNNI"),
    ("avx512_bf16", "AVX-512 BF16"),
    ("amx_tile", "AMX tile"),
    ("amx_int8", "AMX int8"),
    ("amx_bf16", "AMX bf16"),
    ("amx_permitted", "AMX tile state permitted by the OS"),
)


def cpu_features() -> dict:
    """The native module's view of the CPU, or a clear error when it is not built."""
    try:
        import moebox_native
    except ImportError as exc:
        raise NativeUnavailableError(
            f"the native kernels are not installed ({exc}); reinstall moebox with `pip install .`"
        ) from exc
    return moebox_native.cpu_features()


def report() -> list[tuple[str, str]]:
    """Rows of (label, value) describing this machine."""
    from engine import __version__

    rows: list[tuple[str, str]] = [("moebox", __version__), ("python", platform.python_version())]
    try:
        feats = cpu_features()
        rows.append(("cpu", feats.get("brand") or platform.processor() or "unknown"))
        for key, label in _CPU_FLAGS:
            rows.append((label, "yes" if feats[key] else "no"))
    except NativeUnavailableError as exc:
        rows.append(("cpu", f"unknown: {exc}"))
    rows.append(("cores (physical/logical)", f"{psutil.cpu_count(logical=False)}/{os.cpu_count()}"))
    mem = psutil.virtual_memory()
    rows.append(("RAM (total/available)", f"{mem.total / 2**30:.1f} GiB / {mem.available / 2**30:.1f} GiB"))
    try:
        import torch

        rows.append(("torch", torch.__version__))
        rows.append(("CUDA (torch build)", torch.version.cuda or "none (CPU build)"))
        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                p = torch.cuda.get_device_properties(i)
                rows.append((f"GPU {i}", f"{p.name}, {p.total_memory / 2**30:.1f} GiB"))
        else:
            rows.append(("GPU", "none visible to torch"))
    except ImportError:
        rows.append(("torch", "not installed"))
    return rows


def print_report() -> None:
    width = max(len(label) for label, _ in report())
    for label, value in report():
        print(f"{label:<{width}}  {value}")
