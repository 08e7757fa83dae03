"""python -m bots.slack: run the Slack bot until SIGTERM or Ctrl-C."""

from __future__ import annotations

import logging
import signal
import sys
import threading

from slack_sdk.errors import SlackApiError

from bots.slack.config import BotConfig
from bots.slack.errors import ConfigError


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = BotConfig.from_env()
    except ConfigError as error:
        print(f"moebox Slack bot: {error}", file=sys.stderr)
        return 2
    from bots.slack.app import SlackBot  # after the config check: the quick failure stays quick

    try:
        bot = SlackBot(config)
    except OSError as error:  # URLError included: no network, DNS, proxy
        print(
            f"moebox Slack bot: could not reach Slack at {config.slack_api_url} ({getattr(error, 'reason', error)}). "
            "Check the network (and HTTPS_PROXY if one is needed), then start the bot again.",
            file=sys.stderr,
        )
        return 1
    except SlackApiError as error:
        reason = error.response.get("error", error)
        print(
            f"moebox Slack bot: Slack rejected SLACK_BOT_TOKEN ({reason}). Copy the Bot User OAuth Token "
            "(xoxb-…) from the app's OAuth & Permissions page and reinstall the app if it was revoked.",
            file=sys.stderr,
        )
        return 1
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        bot.connect()
    except (SlackApiError, OSError) as error:
        reason = error.response.get("error", error) if isinstance(error, SlackApiError) else error
        print(
            f"moebox Slack bot: Slack refused the Socket Mode connection ({reason}). Check SLACK_APP_TOKEN: "
            "an app-level token (xapp-…) with connections:write, and Socket Mode turned on for the app.",
            file=sys.stderr,
        )
        bot.close()
        return 1
    stop.wait()
    logging.getLogger("bots.slack").info("shutting down")
    bot.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
