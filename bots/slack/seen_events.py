"""Remembers which Slack messages were already answered, so a re-delivered event is answered once."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable


class SeenEvents:
    """A bounded, time-limited set of delivery keys.

    Slack re-delivers an event it thinks was not acknowledged (Socket Mode envelopes carry
    retry_attempt/retry_reason) and may deliver one message as two events (a mention in a
    direct message is both app_mention and message.im). Every key of a delivery (event id,
    client message id, channel + timestamp) is remembered; a delivery sharing any key with an
    earlier one is a repeat.
    """

    def __init__(
        self, ttl_seconds: float = 3600.0, max_keys: int = 50_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl = ttl_seconds
        self._max_keys = max_keys
        self._clock = clock
        self._keys: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def first_time(self, keys: Iterable[str | None]) -> bool:
        """True, and remember the keys, if none of them was seen before."""
        keys = [k for k in keys if k]
        now = self._clock()
        with self._lock:
            while self._keys and (
                len(self._keys) > self._max_keys or next(iter(self._keys.values())) < now - self._ttl
            ):
                self._keys.popitem(last=False)
            if any(k in self._keys for k in keys):
                return False
            for k in keys:
                self._keys[k] = now
            return True
