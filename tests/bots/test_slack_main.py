"""`python -m bots.slack` as users run it: configuration errors and SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from fake_model_server import Script, content_script
from fake_slack import APP_TOKEN, BOT_TOKEN

from bots.slack import format as layout

REPO = Path(__file__).resolve().parents[2]


def run_bot(tmp_path, env: dict, **popen) -> subprocess.Popen:
    # A clean environment: nothing of the developer's own Slack setup leaks in.
    base = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), "HOME": str(tmp_path)}
    return subprocess.Popen(
        [sys.executable, "-m", "bots.slack"],
        cwd=tmp_path,
        env=base | env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def test_missing_tokens_exit_with_a_message_and_no_traceback(tmp_path):
    proc = run_bot(tmp_path, {})
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "SLACK_BOT_TOKEN" in err and "SLACK_APP_TOKEN" in err and "README.md" in err
    assert "Traceback" not in err + out


def test_rejected_bot_token_exits_with_a_message(tmp_path, slack):
    env = {"SLACK_BOT_TOKEN": "xoxb-wrong", "SLACK_APP_TOKEN": APP_TOKEN, "SLACK_API_URL": slack.api_url}
    proc = run_bot(tmp_path, env)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "Slack rejected SLACK_BOT_TOKEN (invalid_auth)" in err
    assert "Traceback" not in err + out


def test_tokens_from_env_file_and_sigterm_mid_answer_ends_cleanly(tmp_path, slack, model_server):
    model_server.script = content_script([f"w{i} " for i in range(400)], pause=0.05)
    (tmp_path / ".env").write_text(f"SLACK_BOT_TOKEN={BOT_TOKEN}\nSLACK_APP_TOKEN={APP_TOKEN}\n")
    env = {
        "SLACK_API_URL": slack.api_url,
        "MOEBOX_API_BASE": model_server.base_url,
        "MOEBOX_SLACK_UPDATE_INTERVAL": "0.2",
    }
    proc = run_bot(tmp_path, env)
    try:
        slack.wait_for(lambda: slack.connections, timeout=60, what="the bot to connect")
        event = slack.user_says("<@U0BOT> go on forever")
        slack.send_event(event)
        post = slack.wait_for(lambda: next(iter(slack.posts()), None))
        ts = post.result["ts"]
        slack.wait_for(lambda: any("w3" in u.params["text"] for u in slack.updates_by_ts.get(ts, [])))
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    final = slack.updates_by_ts[ts][-1].params["text"]
    assert final.startswith("w0 w1 w2 w3")
    assert layout.WARNING in final and "the bot was shut down" in final
    assert len(model_server.requests) == 1


def test_sigterm_while_the_model_server_is_silent_ends_cleanly(tmp_path, slack, model_server):
    model_server.script = Script(behaviour="hang")
    env = {
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_APP_TOKEN": APP_TOKEN,
        "SLACK_API_URL": slack.api_url,
        "MOEBOX_API_BASE": model_server.base_url,
    }
    proc = run_bot(tmp_path, env)
    try:
        slack.wait_for(lambda: slack.connections, timeout=60, what="the bot to connect")
        slack.send_event(slack.user_says("<@U0BOT> anyone?"))
        slack.wait_for(lambda: model_server.requests, what="the completion request")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    ts = slack.posts()[0].result["ts"]
    final = slack.updates_by_ts[ts][-1].params["text"]
    assert final.startswith(layout.WARNING) and "the bot was shut down" in final


def test_rejected_app_token_exits_with_a_message(tmp_path, slack):
    env = {"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_APP_TOKEN": "xapp-wrong", "SLACK_API_URL": slack.api_url}
    proc = run_bot(tmp_path, env)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "Slack refused the Socket Mode connection (invalid_auth)" in err
    assert "Traceback" not in err + out


def test_the_bot_imports_neither_torch_nor_the_engine():
    code = "import sys, bots.slack.app, bots.slack.__main__; print(sorted({'torch', 'engine'} & set(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert out.strip() == "[]"
