"""The model behind the API: loaded in a background thread, then served by a Scheduler."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from engine.errors import MoeboxError
from engine.scheduler import Scheduler, SchedulerStats
from gateway.errors import ModelLoadingError, ModelNotFoundError, ModelUnavailableError

if TYPE_CHECKING:
    from engine.llm import LLM
    from gateway.settings import GatewaySettings

log = logging.getLogger("moebox.gateway")

LoadState = Literal["loading", "ready", "error"]


class ModelHost:
    """Owns the LLM and its Scheduler; answers "is it ready" and "which name is it".

    `model` is a loaded LLM or a callable that loads one (it then runs in a
    background thread started by `start()`, so /health can answer 503 meanwhile).
    """

    def __init__(self, model: LLM | Callable[[], LLM], settings: GatewaySettings):
        self.settings = settings
        self._loader = model if callable(model) and not hasattr(model, "new_sequence") else None
        self.llm: LLM | None = None if self._loader else model  # type: ignore[assignment]
        self.scheduler: Scheduler | None = None
        self.state: LoadState = "loading"
        self.error: str | None = None
        self.created = int(time.time())
        self.ready_event = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.llm is not None:
            self._serve(self.llm)
            return
        self._thread = threading.Thread(target=self._load, name="moebox-load", daemon=True)
        self._thread.start()

    def _load(self) -> None:
        t0 = time.perf_counter()
        try:
            llm = self._loader()
        except Exception as exc:  # the reason is shown by /health and every request
            if isinstance(exc, MoeboxError):  # a user's error (bad path, unsupported file): no traceback
                log.error("loading the model failed: %s", exc)
            else:
                log.exception("loading the model failed")
            self.error = str(exc) or type(exc).__name__
            self.state = "error"
            self.ready_event.set()
            return
        log.info("model loaded in %.1f s", time.perf_counter() - t0)
        self._serve(llm)

    def _serve(self, llm: LLM) -> None:
        s = self.settings
        self.scheduler = Scheduler(
            llm, max_running=s.max_running, max_waiting=s.max_waiting, prefill_chunk=s.prefill_chunk
        )
        self.llm = llm
        self.state = "ready"
        self.ready_event.set()

    def close(self) -> None:
        if self.scheduler is not None:
            self.scheduler.close()

    @property
    def name(self) -> str | None:
        if self.settings.model_name:
            return self.settings.model_name
        return self.llm.model_name if self.llm is not None else None

    def stats(self) -> SchedulerStats | None:
        return self.scheduler.stats() if self.scheduler is not None else None

    def require_ready(self) -> tuple[LLM, Scheduler]:
        if self.state == "loading":
            raise ModelLoadingError("the model is still loading; retry when GET /health answers 200.")
        if self.state == "error" or self.llm is None or self.scheduler is None:
            raise ModelUnavailableError(
                f"the model failed to load: {self.error}; check the server log and restart."
            )
        return self.llm, self.scheduler

    def resolve(self, requested: str | None) -> tuple[LLM, Scheduler]:
        """The served model for a request's `model` field (empty means the default)."""
        llm, scheduler = self.require_ready()
        if requested and requested not in self.aliases():
            raise ModelNotFoundError(
                f"model {requested!r} is not served here; this server serves {self.name!r} (see GET /v1/models).",
                param="model",
            )
        return llm, scheduler

    def aliases(self) -> set[str]:
        names = {self.name or ""}
        if self.llm is not None:
            names.add(self.llm.model_name)
        names |= {n + ":latest" for n in names}  # Ollama clients add a tag
        names.discard("")
        return names
