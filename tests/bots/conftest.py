from __future__ import annotations

import dataclasses
import threading

import pytest
from fake_model_server import FakeModelServer
from fake_slack import APP_TOKEN, BOT_TOKEN, FakeSlack

from bots.slack.app import SlackBot
from bots.slack.config import BotConfig

# Short enough for quick tests, long enough that throttling is visible against the stream.
TEST_UPDATE_INTERVAL = 0.3


@pytest.fixture
def slack():
    fake = FakeSlack()
    yield fake
    fake.close()


@pytest.fixture
def model_server():
    server = FakeModelServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def closing_threads():
    """Closing a Socket Mode client takes a second or two (its threads poll); tests do not wait for it."""
    threads: list[threading.Thread] = []
    yield threads
    for thread in threads:
        thread.join(timeout=10)


@pytest.fixture
def start_bot(slack, closing_threads):
    """start_bot(api_base, **settings) → a SlackBot connected to the fake Slack."""
    bots: list[SlackBot] = []

    def start(api_base: str, **settings) -> SlackBot:
        config = BotConfig(
            slack_bot_token=BOT_TOKEN,
            slack_app_token=APP_TOKEN,
            api_base=api_base,
            update_interval=TEST_UPDATE_INTERVAL,
            read_timeout=5.0,
            connect_timeout=2.0,
            shutdown_grace=2.0,
            slack_api_url=slack.api_url,
        )
        bot = SlackBot(dataclasses.replace(config, **settings))
        bot.connect()
        slack.wait_for(lambda: slack.connections, what="the bot to connect over Socket Mode")
        bots.append(bot)
        return bot

    yield start
    for bot in bots:
        # Stop generations at once (they must not outlive the test's fakes), disconnect in the background.
        bot.stopping.set()
        closing = threading.Thread(target=bot.close, daemon=True)
        closing.start()
        closing_threads.append(closing)
