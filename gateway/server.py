"""`moebox serve`: load a GGUF model in the background and serve the API with uvicorn."""

from __future__ import annotations

import logging
import os

import uvicorn

from gateway.app import RequestIdLogFilter, create_app
from gateway.settings import GatewaySettings

LOG_FORMAT = "%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s"


def configure_logging(level: int = logging.INFO) -> None:
    """One stderr handler; every line carries the request id ("-" outside a request)."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(RequestIdLogFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):  # uvicorn's own lines go through the same handler
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


def serve(
    model_path: str | os.PathLike,
    settings: GatewaySettings,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    threads: int | None = None,
    context_length: int | None = None,
    kv_cache_dtype: str = "auto",
    placement: list | tuple = (),
) -> None:
    """Serve until interrupted. The port opens at once; /health answers 503 until the model is loaded."""
    from engine.llm import LLM

    configure_logging()

    def load() -> LLM:
        return LLM.from_gguf(
            model_path,
            threads=threads,
            context_length=context_length,
            progress=False,
            kv_cache_dtype=kv_cache_dtype,
            placement=placement,
        )

    app = create_app(load, settings)
    logging.getLogger("moebox.gateway").info(
        "serving %s on http://%s:%d (API under /v1 and /api)", model_path, host, port
    )
    # uvicorn's access log runs outside the request; the app writes its own, with the request id.
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=False, timeout_keep_alive=30)
