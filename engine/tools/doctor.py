"""`moebox doctor`: what this machine offers moebox (CPU features, RAM, GPU, torch), and in plain
words what is missing and what to do about it (optionally for a given model file)."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

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
    from engine.native import native_kernels

    return native_kernels().cpu_features()


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


def _nvidia_driver() -> str | None:
    """The NVIDIA driver version from nvidia-smi, None where there is no driver or tool."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().splitlines()[0] if out.strip() else None


def findings(model: str | Path | None = None) -> list[str]:
    """What is missing on this machine, each with what to do; an empty list when all is well."""
    out: list[str] = []
    try:
        feats = cpu_features()
    except NativeUnavailableError as exc:
        out.append(f"The native CPU kernels cannot run: {exc}")
        feats = None
    if feats is not None:
        if not feats["avx2"]:
            out.append("This CPU has no AVX2: moebox's kernels need an x86-64 CPU with AVX2 (2013 or newer).")
        elif not feats["avx512f"]:
            out.append(
                "No AVX-512: the kernels use AVX2. That works; a CPU with AVX-512 (and AMX for prefill) is faster."
            )
        if feats["amx_tile"] and not feats["amx_permitted"]:
            out.append(
                "The CPU has AMX but the OS refused this process the AMX tile state, so prefill uses AVX-512: "
                "run a Linux kernel of 5.16 or newer (in Docker: the host's kernel)."
            )
    try:
        import torch
    except ImportError:
        out.append("torch is not installed: `pip install torch` (the CUDA build for a GPU).")
        torch = None
    driver = _nvidia_driver()
    if torch is not None:
        if torch.version.cuda is None and driver is not None:
            out.append(
                f"An NVIDIA GPU is here (driver {driver}) but torch is a CPU build, so everything runs on the "
                "CPU: install the CUDA build, e.g. `pip install --force-reinstall torch` (CUDA 13 needs driver "
                ">= 580) or `pip install torch --index-url https://download.pytorch.org/whl/cu128`."
            )
        elif torch.version.cuda is not None and not torch.cuda.is_available():
            out.append(
                "torch is a CUDA build but sees no GPU: "
                + (
                    f"the driver ({driver}) may be older than CUDA {torch.version.cuda} needs; update it."
                    if driver
                    else "no NVIDIA driver answers (nvidia-smi is missing or fails). Install the driver; in "
                    "Docker, install the NVIDIA Container Toolkit and give the container the GPU."
                )
            )
        elif torch.version.cuda is None:
            out.append(
                "No GPU: every layer runs on the CPU. Fine for small models; for DeepSeek-R1 a GPU of 16 GB or "
                "more holds attention and the dense layers."
            )
    if model is not None:
        out.extend(_model_findings(model))
    return out


def _model_findings(model: str | Path) -> list[str]:
    """Whether RAM holds the model's routed experts (they must stay in the page cache)."""
    from engine.gguf_file import open_gguf
    from engine.tools.inspect import summarize

    with open_gguf(model) as gguf:
        groups = summarize(gguf)
        total = sum(g.n_bytes for g in groups.values())
    experts = groups["routed experts"].n_bytes if "routed experts" in groups else 0
    ram = psutil.virtual_memory().total
    in_ram = experts if experts else total  # without a GPU the whole file is read from RAM
    reserve = 8 * 2**30  # the OS, the engine's own buffers
    if in_ram + reserve > ram:
        return [
            f"{Path(model).name}: its {'routed experts' if experts else 'weights'} take {in_ram / 2**30:.1f} GiB "
            f"and should stay in RAM (page cache), with about {reserve / 2**30:.0f} GiB more for the system; "
            f"this machine has {ram / 2**30:.1f} GiB: every token would read from disk. Use a smaller quant "
            "of the model or a machine with more RAM."
        ]
    return []


def print_report(model: str | Path | None = None) -> None:
    rows = report()
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    print()
    problems = findings(model)
    if not problems:
        print("Nothing is missing: moebox can use everything this machine offers.")
    for line in problems:
        print(f"- {line}")
