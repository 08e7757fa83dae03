"""Serve many requests from one model: a worker thread, a fair queue, async streams.

One worker thread owns the model. Requests arrive from an asyncio event loop
through `Scheduler.submit(prompt_ids, params)`, which returns a `RequestStream`
(an async iterator of GenerationChunk). The worker admits waiting requests up
to `max_running` live sequences and then goes round-robin: one step (a prefill
chunk or one decoded token) per live sequence per round, so no request starves
another and a long prompt's prefill is cut into chunks that let the others
keep decoding. Waiting requests are bounded: beyond `max_waiting` a submit
raises QueueFullError. `cancel()` takes effect before the sequence's next step
and frees its KV cache. True batching (one forward for several sequences) is
the next step for this class; the interface does not change with it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import itertools
import logging
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from engine.errors import EngineStoppedError, GenerationError, MoeboxError, QueueFullError
from engine.outputs import GenerationChunk
from engine.sampling_params import SamplingParams

if TYPE_CHECKING:
    from engine.llm import LLM
    from engine.sequence import Sequence

log = logging.getLogger("moebox.scheduler")


@dataclass(frozen=True, slots=True)
class SchedulerStats:
    """A snapshot for metrics and tests."""

    waiting: int  # requests queued, not yet started
    running: int  # live sequences (each holds a KV cache)
    kv_cache_bytes: int  # bytes held by the KV caches of live sequences
    kv_cache_tokens: int  # tokens cached by live sequences
    context_length: int  # tokens one sequence may hold
    max_running: int
    finished: int  # requests ended normally (stop / length) since start
    cancelled: int  # requests cancelled since start
    failed: int  # requests ended by an error since start


@dataclass(eq=False)
class _Request:
    id: int
    prompt_ids: list[int]
    params: SamplingParams
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue  # of GenerationChunk | BaseException, filled by the worker thread
    seq: Sequence | None = None
    cancel_requested: bool = False
    # The submitter's context: the worker runs this request's steps in it, so log
    # lines written meanwhile carry what the submitter's logging expects (a request id).
    context: contextvars.Context = field(default_factory=contextvars.copy_context)
    submitted_at: float = field(default_factory=time.perf_counter)

    def deliver(self, item: GenerationChunk | BaseException) -> None:
        # RuntimeError: the event loop is closed, nobody is listening any more.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)


class RequestStream(AsyncIterator[GenerationChunk]):
    """The chunks of one request, as the worker produces them.

    Iterate with `async for`; the last chunk has finish_reason set. Errors the
    engine hits for this request (MoeboxError subclasses) are raised from the
    iteration. `cancel()` (or leaving the loop early and calling `aclose()`)
    stops the request in the engine and frees its cache.
    """

    def __init__(self, scheduler: Scheduler, request: _Request):
        self._scheduler = scheduler
        self._request = request
        self._done = False

    @property
    def request_id(self) -> int:
        return self._request.id

    @property
    def prompt_tokens(self) -> int:
        return len(self._request.prompt_ids)

    def __aiter__(self) -> RequestStream:
        return self

    async def __anext__(self) -> GenerationChunk:
        if self._done:
            raise StopAsyncIteration
        item = await self._request.queue.get()
        if isinstance(item, BaseException):
            self._done = True
            raise item
        if item.finish_reason is not None:
            self._done = True
        return item

    def cancel(self) -> None:
        if not self._done:
            self._done = True
            self._scheduler.cancel(self._request.id)

    async def aclose(self) -> None:
        self.cancel()


class Scheduler:
    """Queue and run generation requests on one model from a dedicated thread."""

    def __init__(self, llm: LLM, *, max_running: int = 32, max_waiting: int = 64, prefill_chunk: int = 256):
        self.llm = llm
        self.max_running = max_running
        self.max_waiting = max_waiting
        self.prefill_chunk = prefill_chunk
        self._cond = threading.Condition()
        self._waiting: collections.deque[_Request] = collections.deque()
        self._running: list[_Request] = []
        self._by_id: dict[int, _Request] = {}
        self._ids = itertools.count(1)
        self._stopping = False
        self._finished = self._cancelled = self._failed = 0
        self._thread = threading.Thread(target=self._work, name="moebox-scheduler", daemon=True)
        self._thread.start()

    # --- called from the event loop ----------------------------------------------------

    def submit(self, prompt_ids: list[int], params: SamplingParams) -> RequestStream:
        """Queue a request; call from a running event loop.

        Raises a PromptError subclass (empty, too long, unknown ids) at once,
        QueueFullError when `max_waiting` requests are already waiting, and
        EngineStoppedError after close().
        """
        self.llm.check_prompt(prompt_ids, params)
        loop = asyncio.get_running_loop()
        with self._cond:
            if self._stopping:
                raise EngineStoppedError("the engine is shutting down; retry on the restarted server.")
            if len(self._waiting) >= self.max_waiting:
                raise QueueFullError(
                    f"the server is busy: {len(self._waiting)} requests are already waiting for the model; "
                    "retry in a moment."
                )
            req = _Request(next(self._ids), list(prompt_ids), params, loop, asyncio.Queue())
            self._waiting.append(req)
            self._by_id[req.id] = req
            self._cond.notify()
        return RequestStream(self, req)

    def cancel(self, request_id: int) -> None:
        """Stop a request: a waiting one is dropped, a running one before its next step."""
        with self._cond:
            req = self._by_id.get(request_id)
            if req is None:
                return
            req.cancel_requested = True
            if req in self._waiting:
                self._waiting.remove(req)
                del self._by_id[req.id]
                self._cancelled += 1
                req.deliver(_cancelled_chunk(req))
            self._cond.notify()

    def stats(self) -> SchedulerStats:
        with self._cond:
            caches = [r.seq.cache for r in self._running if r.seq is not None and r.seq.cache is not None]
            return SchedulerStats(
                waiting=len(self._waiting),
                running=len(self._running),
                kv_cache_bytes=sum(c.n_bytes for c in caches),
                kv_cache_tokens=sum(c.length for c in caches),
                context_length=self.llm.context_length,
                max_running=self.max_running,
                finished=self._finished,
                cancelled=self._cancelled,
                failed=self._failed,
            )

    def close(self, timeout: float | None = 10.0) -> None:
        """Stop the worker; requests still queued or running end with EngineStoppedError."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout)

    # --- the worker thread ---------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not self._waiting and not self._running:
                    self._cond.wait()
                if self._stopping:
                    break
                while self._waiting and len(self._running) < self.max_running:
                    self._running.append(self._waiting.popleft())
                batch = list(self._running)
            for req in batch:  # one round: one step per live sequence
                req.context.run(self._step, req)
        self._shutdown()

    def _step(self, req: _Request) -> None:
        if req.cancel_requested:
            last = req.seq.cancel() if req.seq is not None else _cancelled_chunk(req)  # frees the KV cache
            self._retire(req, last, "cancelled")
            return
        try:
            if req.seq is None:
                req.seq = self.llm.new_sequence(req.prompt_ids, req.params, prefill_chunk=self.prefill_chunk)
            chunk = req.seq.step()
        except MoeboxError as exc:
            self._fail(req, exc)
            return
        except Exception as exc:
            log.exception("request %d: generation failed", req.id)
            self._fail(
                req, GenerationError(f"generation failed ({type(exc).__name__}: {exc}); see the server log.")
            )
            return
        if chunk.finish_reason is not None:
            self._retire(req, chunk, "cancelled" if chunk.finish_reason == "cancelled" else "finished")
        elif chunk.token_ids or chunk.text:
            req.deliver(chunk)

    def _fail(self, req: _Request, exc: BaseException) -> None:
        if req.seq is not None and not req.seq.finished:
            try:
                req.seq.cancel()
            except Exception:
                log.exception("request %d: freeing the sequence failed", req.id)
        self._retire(req, exc, "failed")

    def _retire(self, req: _Request, last: GenerationChunk | BaseException, how: str) -> None:
        with self._cond:
            if req in self._running:
                self._running.remove(req)
            self._by_id.pop(req.id, None)
            if how == "finished":
                self._finished += 1
            elif how == "cancelled":
                self._cancelled += 1
            else:
                self._failed += 1
        req.seq = None
        req.deliver(last)

    def _shutdown(self) -> None:
        with self._cond:
            pending = list(self._waiting) + list(self._running)
            self._waiting.clear()
        for req in pending:
            self._fail(req, EngineStoppedError("the engine shut down before this request finished; retry."))


def _cancelled_chunk(req: _Request) -> GenerationChunk:
    return GenerationChunk(
        token_ids=[], text="", finish_reason="cancelled", prompt_tokens=len(req.prompt_ids)
    )
