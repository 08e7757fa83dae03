"""The wheel build the image runs (scripts/build-wheel), run here in a clean venv.

A copy of the working tree as a clean clone would hold it, a fresh venv, pip's
isolated build (scikit-build-core + CMake); then the wheel is installed and the
native module imported and asked for the CPU features it dispatches on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

from .files import tracked_tree


def test_build_wheel_script_makes_an_importable_portable_wheel(tmp_path: Path) -> None:
    src = tracked_tree(tmp_path / "src")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    out = tmp_path / "wheels"
    build_dir = tmp_path / "build"
    env = {
        **os.environ,
        "PYTHON": str(python),
        "MOEBOX_BUILD_DIR": str(build_dir),
        "CMAKE_BUILD_PARALLEL_LEVEL": "2",
    }
    env.pop("VIRTUAL_ENV", None)
    done = subprocess.run(
        [str(src / "scripts" / "build-wheel"), str(out)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, f"scripts/build-wheel failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"

    (wheel,) = out.glob("moebox-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("moebox_native") and n.endswith(".so") for n in names), names
    assert "moebox/cli.py" in names

    # Every translation unit was compiled without -march/-mtune=native: the wheel
    # must run on CPUs other than the one that built it.
    commands = json.loads(next(build_dir.rglob("compile_commands.json")).read_text())
    assert commands
    for entry in commands:
        flags = entry.get("command") or " ".join(entry["arguments"])
        assert "march=native" not in flags and "mtune=native" not in flags, flags

    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True, env=env)
    probe = subprocess.run(
        [str(python), "-c", "import json, moebox_native; print(json.dumps(moebox_native.cpu_features()))"],
        cwd=tmp_path,  # not the source tree: the import must come from the installed wheel
        env=env,
        capture_output=True,
        text=True,
    )
    assert probe.returncode == 0, probe.stderr
    features = json.loads(probe.stdout)
    # The build machine runs what it built: the dispatcher's view must match the kernel's.
    flags = Path("/proc/cpuinfo").read_text() if sys.platform == "linux" else ""
    if flags:
        assert features["avx2"] == (" avx2 " in flags.replace("\n", " "))
