"""The slackbot image target, rebuilt without Docker: bots/ plus bots/requirements.txt in a clean venv.

That is all the Dockerfile's `slackbot` stage holds, so the bot must import and
start from it alone (no torch, no engine), failing with its own message when the
Slack tokens are missing.
"""

from __future__ import annotations

import shutil
import subprocess
import venv
from pathlib import Path

from .files import REPO


def test_bot_runs_from_its_slim_image_contents(tmp_path: Path) -> None:
    app = tmp_path / "app"
    shutil.copytree(REPO / "bots", app / "bots", ignore=shutil.ignore_patterns("__pycache__"))
    venv.create(tmp_path / "venv", with_pip=True)
    python = str(tmp_path / "venv" / "bin" / "python")
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", "bots/requirements.txt"],
        cwd=app,
        check=True,
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}

    imports = subprocess.run(
        [
            python,
            "-c",
            "import bots.slack.app, bots.slack.__main__, importlib.util as u; print(u.find_spec('torch'))",
        ],
        cwd=app,
        env=env,
        capture_output=True,
        text=True,
    )
    assert imports.returncode == 0, imports.stderr
    assert imports.stdout.strip() == "None", "torch must not be needed (or pulled in) by the bot"

    # What `docker compose --profile slack up` runs, with no tokens configured.
    started = subprocess.run(
        [python, "-m", "bots.slack"], cwd=app, env=env, capture_output=True, text=True, timeout=60
    )
    assert started.returncode == 2, started.stderr
    assert "SLACK_BOT_TOKEN" in started.stderr and "Traceback" not in started.stderr
