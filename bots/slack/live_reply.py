"""The Slack message(s) of one reply: a placeholder, throttled live updates, the final layout."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

log = logging.getLogger(__name__)


class LiveReply:
    """One reply in a thread. Every chat.update of it is at least `interval` seconds after the last write.

    chat.update is rate limited per workspace; a reply streaming at 30 tokens/s would otherwise
    call it 30 times a second.
    """

    def __init__(
        self,
        client: WebClient,
        channel: str,
        thread_ts: str,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.channel = channel
        self.thread_ts = thread_ts
        self.interval = interval
        self.ts: str | None = None
        self._clock = clock
        self._sleep = sleep
        self._last_write = float("-inf")
        self._last_text: str | None = None
        # The generation thread and its heartbeat both write.
        self._lock = threading.RLock()

    def post(self, text: str) -> None:
        """Post the first message of the reply (the placeholder) in the thread."""
        with self._lock:
            self.ts = self._post(text)
            self._last_write = self._clock()
            self._last_text = text

    def show(self, text: str) -> None:
        """Replace the message text now, waiting out the interval if the last write was recent."""
        with self._lock:
            wait = self._last_write + self.interval - self._clock()
            if wait > 0:
                self._sleep(wait)
            self._update(text)

    def progress(self, text: str) -> bool:
        """Replace the message text if the interval has passed; True if it was sent.

        A failed progress update is logged and skipped: the next one (or the final) repairs it.
        """
        with self._lock:
            if text == self._last_text or self._clock() - self._last_write < self.interval:
                return False
            try:
                self._update(text)
            except SlackApiError as error:
                log.warning("chat.update failed while streaming (%s); retrying with the next update", error)
                self._last_write = self._clock()
                return False
            return True

    def finish(self, messages: list[str]) -> None:
        """Final text: the first message replaces the placeholder, the rest follow in the thread."""
        with self._lock:
            self.show(messages[0])
            for text in messages[1:]:
                self._post(text)

    def _update(self, text: str) -> None:
        self.client.chat_update(channel=self.channel, ts=self.ts, text=text)
        self._last_write = self._clock()
        self._last_text = text

    def _post(self, text: str) -> str:
        response = self.client.chat_postMessage(
            channel=self.channel, thread_ts=self.thread_ts, text=text, unfurl_links=False, unfurl_media=False
        )
        return response["ts"]
