import subprocess
import sys

from engine.native import native_kernels


def test_native_kernels_load():
    nk = native_kernels()
    assert nk.isa() in ("scalar", "avx2", "avx512", "amx")
    assert {f["name"] for f in nk.formats()} >= {"Q4_K", "Q8_0", "BF16"}


def test_unusable_isa_is_a_moebox_error():
    code = (
        "from engine.native import native_kernels\n"
        "from engine.errors import NativeUnavailableError\n"
        "try:\n    native_kernels()\nexcept NativeUnavailableError as e:\n    print('ERR', e)\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], env={"MOEBOX_ISA": "nonsense"}, capture_output=True, text=True
    )
    assert "ERR unknown ISA 'nonsense'" in r.stdout, r.stderr
