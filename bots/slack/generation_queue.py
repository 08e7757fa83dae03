"""A deliberate bound on concurrent generations, with a visible queue behind it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass


@dataclass(frozen=True)
class Admission:
    """Where a new request stands: it starts at once, or waits for a slot behind `waiting_before` others."""

    queued: bool
    slots: int
    waiting_before: int


class QueueFull(Exception):
    """Every slot is busy and the waiting line is at its limit."""


class GenerationQueue:
    """Runs at most `slots` generations at once; up to `max_waiting` more wait in order."""

    def __init__(self, slots: int, max_waiting: int) -> None:
        self.slots = slots
        self.max_waiting = max_waiting
        self._executor = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="generation")
        self._lock = threading.Lock()
        self._running = 0
        self._waiting = 0
        self._futures: set[Future] = set()

    def admit(self) -> Admission:
        """Take a place in line (raises QueueFull instead of queueing without bound).

        The caller then start()s its job, or withdraw()s if it could not tell the user.
        """
        with self._lock:
            ahead = self._running + self._waiting - self.slots  # jobs that get a slot before this one
            busy = ahead >= 0
            if busy and ahead >= self.max_waiting:
                raise QueueFull
            self._waiting += 1
            return Admission(queued=busy, slots=self.slots, waiting_before=max(0, ahead))

    def start(self, job: Callable[[], None]) -> None:
        """Run the job of an admitted request on a generation thread, when a slot is free."""
        with self._lock:
            future = self._executor.submit(self._run, job)
            self._futures.add(future)
        future.add_done_callback(self._forget)

    def withdraw(self) -> None:
        with self._lock:
            self._waiting -= 1

    def _forget(self, future: Future) -> None:
        with self._lock:
            self._futures.discard(future)

    def _run(self, job: Callable[[], None]) -> None:
        with self._lock:
            self._waiting -= 1
            self._running += 1
        try:
            job()
        finally:
            with self._lock:
                self._running -= 1

    def shutdown(self, timeout: float) -> bool:
        """Stop taking jobs and wait up to `timeout` s for the submitted ones; True if all ended."""
        with self._lock:
            futures = set(self._futures)
        done, not_done = wait(futures, timeout=timeout)
        self._executor.shutdown(wait=not not_done, cancel_futures=False)
        return not not_done
