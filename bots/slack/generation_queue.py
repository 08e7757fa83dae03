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

    def submit(self, job: Callable[[bool], None]) -> Admission:
        """Queue `job`; it is called as job(started_after_waiting) on a generation thread.

        Raises QueueFull instead of queueing without bound.
        """
        with self._lock:
            ahead = self._running + self._waiting - self.slots  # jobs that get a slot before this one
            busy = ahead >= 0
            if busy and ahead >= self.max_waiting:
                raise QueueFull
            admission = Admission(queued=busy, slots=self.slots, waiting_before=max(0, ahead))
            self._waiting += 1
            future = self._executor.submit(self._run, job, busy)
            self._futures.add(future)
            future.add_done_callback(self._futures.discard)
        return admission

    def _run(self, job: Callable[[bool], None], was_queued: bool) -> None:
        with self._lock:
            self._waiting -= 1
            self._running += 1
        try:
            job(was_queued)
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
