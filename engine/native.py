"""The native CPU kernels (`moebox_native`): the one place that finds them and checks this CPU.

`moebox_native` itself raises RuntimeError when the CPU cannot run it (no AVX2,
or MOEBOX_ISA names a level the CPU lacks); here that becomes a
NativeUnavailableError that says what to do. Layers ask once, when they are
built, and then run either the native kernels or torch (engine/layers/fused.py).
"""

from __future__ import annotations

import functools
from types import ModuleType

from engine.errors import NativeUnavailableError


@functools.cache
def native_kernels() -> ModuleType:
    """The `moebox_native` module, after checking that its kernels run on this CPU."""
    try:
        import moebox_native
    except ImportError as exc:
        raise NativeUnavailableError(
            f"the native kernels are not built ({exc}); reinstall moebox: pip install --no-build-isolation -e ."
        ) from exc
    try:
        moebox_native.isa()
    except (RuntimeError, ValueError) as exc:
        raise NativeUnavailableError(f"{exc}") from exc
    return moebox_native


@functools.cache
def cpu_kernels() -> ModuleType | None:
    """`moebox_native` where it runs on this CPU, else None (torch computes the same on the CPU)."""
    try:
        return native_kernels()
    except NativeUnavailableError:
        return None


def set_threads(threads: int) -> None:
    """Threads for the CPU work: the native pool where it runs, else torch's."""
    import torch

    native = cpu_kernels()
    if native is not None:
        native.set_num_threads(threads)
        # The native pool (the calling thread included) does the heavy CPU work; a second
        # pool of torch threads spinning beside it only steals its cores.
        torch.set_num_threads(1)
    else:
        torch.set_num_threads(threads)
