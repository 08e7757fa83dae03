"""The native CPU kernels (`moebox_native`), loaded once and checked for this CPU.

`moebox_native` itself raises RuntimeError when the CPU cannot run it (no AVX2,
or MOEBOX_ISA names a level the CPU lacks); here that becomes a
NativeUnavailableError that says what to do.
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
