"""Serve many requests from one model: each step is one forward for every live request.

A step: `schedule()` picks the work (the next token of every decoding sequence, then prompt
chunks of the sequences still prefilling, first come first served, under a token budget; then
waiting requests admitted while the KV pool and `max_running` allow) → `ModelRunner.run` computes
it in one forward and samples → `postprocess()` turns each new token into a chunk, and frees the
blocks of sequences that ended.

Prompts are cut into chunks of `prefill_chunk` tokens counted from the start of the prompt, and
a chunk is never cut to fit the budget (it waits for the next step instead), so a sequence's
rows go through the same kernels whatever else is in the batch. The step budget lets only one
chunk past it, so decoding streams keep their pace while a long prompt is prefilled.

Use it in one of two ways: `add()` and `step()` from one thread (LLM.generate does), or
`submit()` from an asyncio event loop, which returns a `RequestStream` and runs the steps on a
worker thread started on the first submit. Waiting requests are bounded: beyond `max_waiting` a
submit raises QueueFullError. `cancel()` takes effect at the start of the next step and frees the
request's blocks.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import dataclasses
import logging
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from engine.block_manager import BlockManager, BlockStats
from engine.errors import ContextLengthError, EngineStoppedError, GenerationError, MoeboxError, QueueFullError
from engine.model_runner import ModelRunner
from engine.outputs import GenerationChunk
from engine.sampling_params import SamplingParams
from engine.sequence import Sequence, SequenceStatus

if TYPE_CHECKING:
    from engine.llm import LLM

log = logging.getLogger("moebox.scheduler")

BLOCK_SIZE = 16  # tokens per KV block: the unit of the pool's budget and of prefix reuse


@dataclass(frozen=True, slots=True)
class SchedulerStats:
    """A snapshot for metrics and tests."""

    waiting: int  # requests queued, not yet started
    running: int  # live sequences (each holds KV blocks)
    kv_cache_bytes: int  # bytes held by the KV caches of live sequences
    kv_cache_tokens: int  # tokens cached by live sequences
    context_length: int  # tokens of KV cache in the pool (and the most one request may hold)
    max_running: int
    finished: int  # requests ended normally (stop / length) since start
    cancelled: int  # requests cancelled since start
    failed: int  # requests ended by an error since start
    kv_blocks_total: int = 0
    kv_blocks_used: int = 0  # held by running requests
    kv_blocks_cached: int = 0  # held by the prefix cache, given back when needed
    kv_blocks_free: int = 0
    kv_block_size: int = BLOCK_SIZE
    prompt_tokens: int = 0  # prompt tokens of admitted requests since start
    cached_prompt_tokens: int = 0  # of those, taken from the prefix cache
    steps: int = 0  # forwards run since start
    step_tokens: int = 0  # tokens computed by those forwards
    last_step_tokens: int = 0
    out_of_kv: int = 0  # requests ended with "length" because the pool was full


class Scheduler:
    """Queue and run generation requests on one model, batching every live request per step."""

    def __init__(
        self,
        llm: LLM,
        *,
        max_running: int = 32,
        max_waiting: int = 64,
        prefill_chunk: int = 256,
        step_tokens: int | None = None,
        kv_tokens: int | None = None,
        block_size: int = BLOCK_SIZE,
    ):
        """max_running: live requests at most (--parallel); prefill_chunk: prompt tokens per chunk
        (0: a whole prompt at once); step_tokens: tokens per step beyond which no further chunk
        joins (default: prefill_chunk); kv_tokens: the KV pool (default: llm.context_length)."""
        self.llm = llm
        self.max_running = max_running
        self.max_waiting = max_waiting
        self.prefill_chunk = prefill_chunk
        self.step_tokens = step_tokens if step_tokens is not None else max(prefill_chunk, 1)
        kv_tokens = kv_tokens or llm.context_length
        self.block_manager = BlockManager(-(-kv_tokens // block_size), block_size, llm.model.new_cache)
        self.runner = ModelRunner(llm.model)
        self.waiting: collections.deque[Sequence] = collections.deque()
        self.running: list[Sequence] = []
        self._finished = self._cancelled = self._failed = self._out_of_kv = 0
        self._steps = self._step_tokens = self._last_step_tokens = 0
        # the event-loop side (submit) and the worker thread
        self._cond = threading.Condition()
        self._requests: dict[int, _Request] = {}
        self._cancels: list[_Request] = []
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._snapshot = self._make_stats()

    # --- one step: schedule → run → postprocess ------------------------------------------------

    def add(self, seq: Sequence) -> None:
        """Queue a sequence (from LLM.new_sequence) to run in the following steps."""
        self._fit(seq)
        self.waiting.append(seq)

    def _fit(self, seq: Sequence) -> None:
        """A sequence may hold at most the whole pool; a prompt that cannot fit even then is refused."""
        pool = self.block_manager.num_blocks * self.block_manager.block_size
        seq.context_length = min(seq.context_length, pool)
        if len(seq.prompt_ids) >= seq.context_length:
            raise ContextLengthError(
                f"the prompt has {len(seq.prompt_ids)} tokens but the KV cache holds {seq.context_length} "
                "(one more is needed to generate); shorten the prompt or raise --ctx-size."
            )

    def step(self) -> list[tuple[Sequence, GenerationChunk]]:
        """Run one step; returns the chunks it produced (a token each, or a sequence's end)."""
        batch, ended = self.schedule()
        if self._thread is not None:  # admissions show in stats() while the forward runs
            with self._cond:
                self._snapshot = self._make_stats()
        if not batch:
            return ended
        t0 = time.perf_counter()
        try:
            tokens = self.runner.run(batch)
        except Exception as exc:
            if not isinstance(exc, MoeboxError):
                log.exception("a step of %d requests failed", len(batch))
                exc = GenerationError(f"generation failed ({type(exc).__name__}: {exc}); see the server log.")
            for seq, _ in batch:
                self._retire(seq)
                self._failed += 1
            raise StepError(exc, [seq for seq, _ in batch]) from exc
        dt_ms = (time.perf_counter() - t0) * 1e3
        self._steps += 1
        self._last_step_tokens = sum(n for _, n in batch)
        self._step_tokens += self._last_step_tokens
        return ended + self.postprocess(batch, tokens, dt_ms)

    def schedule(self) -> tuple[list[tuple[Sequence, int]], list[tuple[Sequence, GenerationChunk]]]:
        """(batch, ended): the (sequence, tokens) of this step, and the sequences ended because the
        KV pool had no room for their next token."""
        bm = self.block_manager
        batch: list[tuple[Sequence, int]] = []
        ended: list[tuple[Sequence, GenerationChunk]] = []
        budget = self.step_tokens
        for seq in list(self.running):  # every decoding sequence gets its next token
            if not seq.prefill_done:
                continue
            if not bm.grow(seq, seq.num_computed + 1):
                ended.append((seq, self._out_of_pool(seq)))
                continue
            batch.append((seq, 1))
            budget -= 1
        chunked = False  # one prompt chunk always runs; more only within the budget
        for seq in self.running:  # prompts being prefilled, oldest first
            if seq.prefill_done:
                continue
            n = self._chunk(seq)
            if chunked and n > budget:
                return batch, ended
            batch.append((seq, n))
            budget -= n
            chunked = True
        while self.waiting and len(self.running) < self.max_running:
            seq = self.waiting[0]
            if chunked and budget <= 0:
                break
            if not bm.allocate(seq):
                break  # first come first served: it waits until blocks are freed
            self.waiting.popleft()
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            n = self._chunk(seq)
            if chunked and n > budget:
                break  # admitted: its first chunk leads the next step
            batch.append((seq, n))
            budget -= n
            chunked = True
        return batch, ended

    def postprocess(
        self, batch: list[tuple[Sequence, int]], tokens: list[int | None], dt_ms: float
    ) -> list[tuple[Sequence, GenerationChunk]]:
        """Record what the step computed and sampled; end the sequences that are done."""
        out = []
        for (seq, n), token in zip(batch, tokens, strict=True):
            self.block_manager.register(seq)
            if seq.num_computed - n < len(seq.prompt_ids):
                seq.timings.prompt_ms += dt_ms
            else:
                seq.timings.predicted_ms += dt_ms
            if token is None:
                continue  # a prompt chunk that is not the last
            chunk = self._in_context(seq, seq.append_token, token)
            if seq.finished:
                self._retire(seq)
                self._finished += 1
            out.append((seq, chunk))
        return out

    def abort(self, seq: Sequence) -> GenerationChunk:
        """End a sequence now (between steps), freeing its blocks; returns its last chunk."""
        if seq.finished:
            return seq.chunk([], "")
        if seq.status is SequenceStatus.WAITING:
            with self._cond, contextlib.suppress(ValueError):  # submit() appends meanwhile
                self.waiting.remove(seq)
        chunk = self._in_context(seq, seq.finish, "cancelled")
        self._retire(seq)
        self._cancelled += 1
        return chunk

    def _chunk(self, seq: Sequence) -> int:
        todo = len(seq.prompt_ids) - seq.num_computed
        return min(todo, self.prefill_chunk) if self.prefill_chunk > 0 else todo

    def _out_of_pool(self, seq: Sequence) -> GenerationChunk:
        s = self.block_manager.stats()
        log.warning(
            "request %d: the KV cache pool is full (%d blocks of %d tokens, %d requests running); "
            "ending it at %d tokens with finish_reason length. Raise --ctx-size or lower --parallel.",
            seq.id,
            s.total,
            self.block_manager.block_size,
            len(self.running),
            seq.num_tokens,
        )
        chunk = self._in_context(seq, lambda: seq.finish("length", [], seq.drain()))
        self._retire(seq)
        self._finished += 1
        self._out_of_kv += 1
        return chunk

    def _retire(self, seq: Sequence) -> None:
        if seq in self.running:
            self.running.remove(seq)
        if not seq.finished:
            seq.status = SequenceStatus.FINISHED
        self.block_manager.release(seq)

    def _in_context(self, seq: Sequence, fn, *args):
        """Run fn for a request in its submitter's context, so log lines carry its request id."""
        req = self._requests.get(seq.id)
        return req.context.run(fn, *args) if req is not None else fn(*args)

    def _make_stats(self) -> SchedulerStats:
        b: BlockStats = self.block_manager.stats()
        caches = [s.cache for s in self.running if s.cache is not None]
        return SchedulerStats(
            waiting=len(self.waiting),
            running=len(self.running),
            kv_cache_bytes=sum(c.n_bytes for c in caches),
            kv_cache_tokens=sum(c.length for c in caches),
            context_length=self.llm.context_length,
            max_running=self.max_running,
            finished=self._finished,
            cancelled=self._cancelled,
            failed=self._failed,
            kv_blocks_total=b.total,
            kv_blocks_used=b.used,
            kv_blocks_cached=b.cached,
            kv_blocks_free=b.free,
            kv_block_size=self.block_manager.block_size,
            prompt_tokens=b.prompt_tokens,
            cached_prompt_tokens=b.cached_tokens,
            steps=self._steps,
            step_tokens=self._step_tokens,
            last_step_tokens=self._last_step_tokens,
            out_of_kv=self._out_of_kv,
        )

    # --- called from the event loop ----------------------------------------------------------------

    def submit(self, prompt_ids: list[int], params: SamplingParams) -> RequestStream:
        """Queue a request; call from a running event loop.

        Raises a PromptError subclass (empty, too long, unknown ids) at once,
        QueueFullError when `max_waiting` requests are already waiting, and
        EngineStoppedError after close().
        """
        seq = self.llm.new_sequence(prompt_ids, params)
        self._fit(seq)
        loop = asyncio.get_running_loop()
        with self._cond:
            if self._stopping:
                raise EngineStoppedError("the engine is shutting down; retry on the restarted server.")
            queued = sum(1 for r in self._requests.values() if r.seq.status is SequenceStatus.WAITING)
            if queued >= self.max_waiting:
                raise QueueFullError(
                    f"the server is busy: {queued} requests are already waiting for the model; "
                    "retry in a moment."
                )
            req = _Request(seq, loop, asyncio.Queue())
            self._requests[seq.id] = req
            self.waiting.append(seq)
            self._snapshot = dataclasses.replace(self._snapshot, waiting=self._snapshot.waiting + 1)
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="moebox-scheduler", daemon=True)
                self._thread.start()
            self._cond.notify()
        return RequestStream(self, req)

    def cancel(self, request_id: int) -> None:
        """Stop a request: it ends (and frees its blocks) at the start of the next step."""
        with self._cond:
            req = self._requests.get(request_id)
            if req is None or req.cancel_requested:
                return
            req.cancel_requested = True
            self._cancels.append(req)
            self._cond.notify()

    def stats(self) -> SchedulerStats:
        with self._cond:
            return self._snapshot

    def close(self, timeout: float | None = 10.0) -> None:
        """Stop the worker; requests still queued or running end with EngineStoppedError."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    # --- the worker thread ---------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._cond:
                while not (self._stopping or self._cancels or self.waiting or self.running):
                    self._cond.wait()
                if self._stopping:
                    break
                cancels, self._cancels = self._cancels, []
            outputs = [(req.seq, self.abort(req.seq)) for req in cancels]
            try:
                outputs += self.step()
            except StepError as err:
                outputs += [(seq, err.error) for seq in err.sequences]
            with self._cond:  # before the chunks go out: a client that saw its token sees the step's stats
                self._snapshot = self._make_stats()
            for seq, item in outputs:
                if (
                    isinstance(item, BaseException)
                    or item.finish_reason is not None
                    or item.token_ids
                    or item.text
                ):
                    self._deliver(seq, item)
        self._shutdown()

    def _deliver(self, seq: Sequence, item: GenerationChunk | BaseException) -> None:
        req = self._requests.get(seq.id)
        if req is None:
            return
        if isinstance(item, BaseException) or item.finish_reason is not None:
            with self._cond:
                self._requests.pop(seq.id, None)
        req.deliver(item)

    def _shutdown(self) -> None:
        stopped = EngineStoppedError("the engine shut down before this request finished; retry.")
        for seq in list(self.waiting) + list(self.running):
            self._retire(seq)
            self._failed += 1
            self._deliver(seq, stopped)
        self.waiting.clear()
        with self._cond:
            self._snapshot = self._make_stats()


class StepError(Exception):
    """A forward failed: every sequence of the step has ended with `error`."""

    def __init__(self, error: MoeboxError, sequences: list[Sequence]):
        super().__init__(str(error))
        self.error = error
        self.sequences = sequences


@dataclass(eq=False)
class _Request:
    seq: Sequence
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue  # of GenerationChunk | BaseException, filled by the worker thread
    cancel_requested: bool = False
    # The submitter's context: the worker runs this request's postprocessing in it, so log
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
        return self._request.seq.id

    @property
    def prompt_tokens(self) -> int:
        return len(self._request.seq.prompt_ids)

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
            self._scheduler.cancel(self.request_id)

    async def aclose(self) -> None:
        self.cancel()
