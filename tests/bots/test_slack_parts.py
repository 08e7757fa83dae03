import threading
import time

import pytest

from bots.slack.config import BotConfig
from bots.slack.errors import ConfigError
from bots.slack.generation_queue import GenerationQueue, QueueFull
from bots.slack.live_reply import LiveReply
from bots.slack.seen_events import SeenEvents


def test_config_reads_env_file_and_environment_wins(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text(
        "SLACK_BOT_TOKEN=xoxb-file\nSLACK_APP_TOKEN=xapp-file\nMOEBOX_MODEL=from-file\nMOEBOX_SLACK_CONCURRENCY=3\n"
    )
    config = BotConfig.from_env({"MOEBOX_MODEL": "from-env"}, env_file=str(env_file))
    assert (config.slack_bot_token, config.slack_app_token) == ("xoxb-file", "xapp-file")
    assert config.model == "from-env" and config.concurrency == 3
    assert config.api_base == "http://engine:8080/v1" and config.update_interval == 1.5


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, "missing SLACK_BOT_TOKEN"),
        ({"SLACK_BOT_TOKEN": "xoxb-1"}, "missing SLACK_APP_TOKEN"),
        ({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xoxb-2"}, "app-level token"),
        (
            {"SLACK_BOT_TOKEN": "x", "SLACK_APP_TOKEN": "xapp-1", "MOEBOX_SLACK_CONCURRENCY": "two"},
            "not a int",
        ),
        (
            {"SLACK_BOT_TOKEN": "x", "SLACK_APP_TOKEN": "xapp-1", "MOEBOX_SLACK_CONCURRENCY": "0"},
            "at least 1",
        ),
    ],
)
def test_config_errors_say_what_to_set(environ, message):
    with pytest.raises(ConfigError, match=message):
        BotConfig.from_env(environ, env_file=None)


def test_seen_events_any_shared_key_is_a_repeat_and_keys_expire():
    now = [0.0]
    seen = SeenEvents(ttl_seconds=10, clock=lambda: now[0])
    assert seen.first_time(["Ev1", "msg-a", "C1:1.0"])
    assert not seen.first_time(["Ev1"])  # re-delivery
    assert not seen.first_time(["Ev2", None, "C1:1.0"])  # same message as another event
    assert seen.first_time(["Ev3", "msg-b", "C1:2.0"])
    now[0] = 11.0
    assert seen.first_time(["Ev1"])


def test_generation_queue_bounds_running_jobs_and_reports_the_line():
    queue = GenerationQueue(slots=2, max_waiting=2)
    release = threading.Event()
    ran = []

    def job(n):
        ran.append(n)
        release.wait(5)

    admissions = []
    for n in range(3):
        admissions.append(queue.admit())
        queue.start(lambda n=n: job(n))
    assert [(a.queued, a.waiting_before) for a in admissions] == [(False, 0), (False, 0), (True, 0)]
    fourth = queue.admit()
    assert (fourth.queued, fourth.waiting_before) == (True, 1)
    with pytest.raises(QueueFull):
        queue.admit()
    queue.withdraw()  # the fourth could not be announced: its place is given back
    assert queue.admit().waiting_before == 1
    queue.withdraw()
    deadline = time.monotonic() + 5
    while len(ran) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(ran) == [0, 1]  # the third waits for a free slot
    release.set()
    assert queue.shutdown(timeout=5)
    assert sorted(ran) == [0, 1, 2]


class RecordingClient:
    def __init__(self):
        self.calls = []

    def chat_postMessage(self, **kwargs):
        self.calls.append(("post", kwargs["text"]))
        return {"ts": f"{len(self.calls)}.0"}

    def chat_update(self, **kwargs):
        self.calls.append(("update", kwargs["text"]))
        return {"ok": True}


def test_live_reply_writes_at_most_once_per_interval():
    clock = [0.0]
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        clock[0] += seconds

    client = RecordingClient()
    reply = LiveReply(client, "C1", "1.0", interval=1.5, clock=lambda: clock[0], sleep=sleep)
    reply.post("placeholder")
    sent = []
    for step in range(30):  # a token every 0.1 s for 3 s
        clock[0] = 0.1 * (step + 1)
        sent.append(reply.progress(f"text {step}"))
    assert sum(sent) == 2  # at 1.5 s and at 3.0 s
    # The final write waits out the interval after the update at 3.0 s; later parts are new posts.
    reply.finish(["final part 1", "final part 2"])
    assert slept == [pytest.approx(1.5)]
    assert [kind for kind, _ in client.calls] == ["post", "update", "update", "update", "post"]
    assert client.calls[-2:] == [("update", "final part 1"), ("post", "final part 2")]
