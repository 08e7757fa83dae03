"""scripts/docker-entrypoint: how the engine container turns MODEL and friends into `moebox serve`.

A recording `moebox` placed first on PATH stands in for the real one and prints
the argv it was given, so each case checks the exact command the container runs.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
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
    models = tmp_path / "models"
    (models / "r1").mkdir(parents=True)
    (models / "r1" / "DeepSeek-R1-UD-IQ1_S-00001-of-00003.gguf").write_bytes(b"GGUF")

    def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
        base = {
            "PATH": f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin",
            "MODELS_DIR": str(models),
        }
        return subprocess.run([str(ENTRYPOINT), *args], env={**base, **env}, capture_output=True, text=True)

    run.models = models
    return run


def test_no_model_leaves_serve_to_its_embedded_default(run) -> None:
    done = run({})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [
        "serve",
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


def test_entrypoint_starts_the_real_server_on_the_embedded_model(tmp_path: Path) -> None:
    """No stand-in: the installed `moebox serve` behind the entry point, as the container runs it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "MOEBOX_API_KEY": "k-entrypoint",
        "MODEL_NAME": "appliance-test",
    }
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen([str(ENTRYPOINT)], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            assert time.monotonic() < deadline, f"not healthy after 300 s:\n{log.read_text()}"
            time.sleep(0.5)
        models = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(models, timeout=10)
        assert refused.value.code == 401  # the key from the environment is enforced
        models.add_header("Authorization", "Bearer k-entrypoint")
        with urllib.request.urlopen(models, timeout=10) as r:
            listed = [m["id"] for m in json.load(r)["data"]]
        assert listed == ["appliance-test"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_entrypoint_is_executable() -> None:
    assert os.access(ENTRYPOINT, os.X_OK)
