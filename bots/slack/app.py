"""The bot: Slack events in, streamed completions out, one reply per question."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from slack_bolt import App, BoltRequest
from slack_bolt.adapter.socket_mode import SocketModeHandler
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

from bots.slack import format as layout
from bots.slack.chat_api import ChatAPI, Finish, Usage
from bots.slack.config import BotConfig
from bots.slack.errors import ModelServerError
from bots.slack.generation_queue import GenerationQueue, QueueFull
from bots.slack.history import thread_to_messages, user_text
from bots.slack.live_reply import LiveReply
from bots.slack.seen_events import SeenEvents
from bots.slack.think_split import ThinkSplitter

log = logging.getLogger(__name__)

# Bolt's listeners only post a placeholder and queue the generation, so a few threads keep
# up with any burst; the generations themselves run on GenerationQueue's threads.
LISTENER_THREADS = 4
# While waiting for the first token, the placeholder shows the time waited every this many
# update intervals.
HEARTBEAT_UPDATES = 5
# The most thread messages read back as history (Slack pages them 200 at a time).
HISTORY_PAGES = 5


@dataclass(frozen=True)
class Question:
    """A message the bot was asked to answer."""

    channel: str
    ts: str
    thread_ts: str  # where the reply goes: the message's thread, or a new one under it
    in_thread: bool  # the message was itself a thread reply, so the thread holds history
    event: dict


class SlackBot:
    """Answers app_mention and direct-message events over Socket Mode."""

    def __init__(self, config: BotConfig, web_client: WebClient | None = None, api: ChatAPI | None = None):
        self.config = config
        self.client = web_client or WebClient(token=config.slack_bot_token, base_url=config.slack_api_url)
        self.client.retry_handlers.append(RateLimitErrorRetryHandler(max_retry_count=2))
        self.api = api or ChatAPI(
            config.api_base,
            api_key=config.api_key,
            read_timeout=config.read_timeout,
            connect_timeout=config.connect_timeout,
        )
        # auth.test: fails here, before connecting, on a revoked or mistyped bot token.
        identity = self.client.auth_test()
        self.bot_user_id: str | None = identity.get("user_id")
        self.bot_id: str | None = identity.get("bot_id")
        # Bolt reads SLACK_BOT_TOKEN itself and warns that it is unused beside our client (which
        # carries the same token); that warning would only confuse whoever reads the log.
        logging.getLogger("slack_bolt.App").addFilter(_TokenUnusedWarningFilter())
        self.app = App(
            client=self.client,
            listener_executor=ThreadPoolExecutor(LISTENER_THREADS, thread_name_prefix="slack-listener"),
        )
        self.app.event("app_mention")(self._on_app_mention)
        self.app.event("message")(self._on_message)
        self.queue = GenerationQueue(config.concurrency, config.max_waiting)
        self.seen = SeenEvents()
        self.stopping = threading.Event()
        self.handler = SocketModeHandler(self.app, config.slack_app_token)

    # -- lifecycle -------------------------------------------------------------------------

    def connect(self) -> None:
        """Open the Socket Mode connection; events are handled on background threads."""
        self.handler.connect()
        log.info(
            "connected to Slack as %s; model server %s, %d generation slot(s)",
            self.bot_user_id,
            self.api.base_url,
            self.config.concurrency,
        )

    def close(self) -> None:
        """Stop taking events, cut running generations short (their messages say so) and disconnect."""
        self.stopping.set()
        self.api.abort()  # breaks streams, even those waiting on a silent server
        self.handler.close()
        if not self.queue.shutdown(timeout=self.config.shutdown_grace):
            log.warning("some replies were still being written after %.0f s", self.config.shutdown_grace)
        self.app.listener_runner.listener_executor.shutdown(wait=False, cancel_futures=True)
        self.api.close()

    # -- events ----------------------------------------------------------------------------

    def _on_app_mention(self, event: dict, body: dict, request: BoltRequest) -> None:
        self._take(event, body, request)

    def _on_message(self, event: dict, body: dict, request: BoltRequest) -> None:
        if event.get("channel_type") != "im" or event.get("subtype") or event.get("bot_id"):
            return  # edits, deletions, joins and bot posts are not questions
        self._take(event, body, request)

    def _take(self, event: dict, body: dict, request: BoltRequest) -> None:
        channel, ts = event["channel"], event["ts"]
        keys = (body.get("event_id"), event.get("client_msg_id"), f"{channel}:{ts}")
        if not self.seen.first_time(keys):
            retry = request.headers.get("x-slack-retry-num", [None])[0]
            log.info("already answering %s:%s (event %s, retry %s); ignored", channel, ts, keys[0], retry)
            return
        if self.stopping.is_set():
            return
        question = Question(
            channel=channel,
            ts=ts,
            thread_ts=event.get("thread_ts") or ts,
            in_thread=bool(event.get("thread_ts")),
            event=event,
        )
        reply = LiveReply(self.client, channel, question.thread_ts, self.config.update_interval)
        if not user_text(event.get("text", ""), self.bot_user_id):
            reply.post(layout.hint("Ask me something: mention me followed by your question."))
            return
        try:
            model = self.config.model or self.api.default_model()
        except ModelServerError as error:
            reply.post(layout.error_note(str(error)))
            return
        try:
            admission = self.queue.admit()
        except QueueFull:
            reply.post(
                layout.error_note(
                    f"Too many questions at once: {self.config.concurrency} being answered and "
                    f"{self.config.max_waiting} waiting. Ask again in a few minutes."
                )
            )
            return
        try:
            if admission.queued:
                reply.post(layout.queued_note(model, admission.slots, admission.waiting_before))
            else:
                reply.post(layout.placeholder(model))
        except BaseException:
            self.queue.withdraw()
            raise
        self.queue.start(lambda: self._answer(question, reply, model, admission.queued))

    # -- one answer ------------------------------------------------------------------------

    def _answer(self, question: Question, reply: LiveReply, model: str, was_queued: bool) -> None:
        try:
            if self.stopping.is_set():
                reply.show(layout.error_note("The bot was restarted before it got to this; ask again."))
                return
            if was_queued:
                reply.show(layout.placeholder(model))
            self._generate(question, reply, model)
        except SlackApiError as error:
            log.error("Slack refused a call while answering in %s: %s", question.channel, error)
            with contextlib.suppress(SlackApiError):
                reason = error.response.get("error", "unknown error")
                reply.show(
                    layout.error_note(
                        f"Slack refused a call the bot needs ({reason}). If it is missing_scope, reinstall "
                        "the app with the scopes of bots/manifest.yaml."
                    )
                )
        except Exception:
            log.exception("reply to %s:%s failed", question.channel, question.ts)
            with contextlib.suppress(SlackApiError):
                reply.show(
                    layout.error_note("The bot hit an internal error on this one (see its log); ask again.")
                )

    def _generate(self, question: Question, reply: LiveReply, model: str) -> None:
        messages = thread_to_messages(
            self._thread(question) if question.in_thread else [],
            question.event,
            self.bot_user_id,
            self.bot_id,
            self.config.system_prompt,
        )
        splitter = ThinkSplitter()
        started = time.monotonic()
        first_token: float | None = None
        deltas = 0
        usage: Usage | None = None
        finish: Finish | None = None
        problem: str | None = None
        first_seen = threading.Event()
        heartbeat = threading.Thread(
            target=self._heartbeat, args=(reply, model, started, first_seen), name="heartbeat", daemon=True
        )
        heartbeat.start()
        try:
            for item in self.api.stream_chat(model, messages, self.config.max_tokens, cancel=self.stopping):
                if isinstance(item, Usage):
                    usage = item
                    continue
                if isinstance(item, Finish):
                    finish = item
                    continue
                if first_token is None:
                    first_token = time.monotonic()
                    first_seen.set()
                deltas += 1
                splitter.feed(item.content, item.reasoning)
                doing = "writing" if splitter.answer else "thinking"
                status = f"{layout.WORKING} _{doing}… {deltas} tokens, {time.monotonic() - started:.0f} s ({model})_"
                reply.progress(layout.render_live(splitter.thinking, splitter.answer, status))
        except ModelServerError as error:
            problem = str(error)
        finally:
            first_seen.set()
            heartbeat.join()
        splitter.finish()
        if self.stopping.is_set():
            problem = "Stopped: the bot was shut down while answering. Ask again when it is back."
        elif finish is not None and finish.reason == "length":
            problem = "The model reached its token limit (MOEBOX_MAX_TOKENS or the server's default)."
        ended = time.monotonic()
        if first_token is None:
            reply.show(layout.error_note(problem or "The model server returned an empty completion."))
            return
        exact = usage is not None and usage.completion_tokens is not None
        tokens = usage.completion_tokens if exact else deltas
        stats = layout.Stats(
            completion_tokens=tokens,
            exact=exact,
            tokens_per_second=tokens / max(ended - first_token, 1e-6),
            seconds=ended - started,
            model=model,
        )
        closing = [layout.footer(stats)]
        if problem:
            closing.insert(0, layout.error_note(f"The answer is incomplete. {problem}"))
        reply.finish(layout.render_final(splitter.thinking, splitter.answer, closing))
        log.info(
            "answered %s:%s: %d tokens, %.1f tok/s, %.1f s",
            question.channel,
            question.ts,
            tokens,
            stats.tokens_per_second,
            stats.seconds,
        )

    def _heartbeat(self, reply: LiveReply, model: str, started: float, first_seen: threading.Event) -> None:
        """Until the first token, show that the model is still at work (prefill of a long thread on
        a 671B model can take minutes)."""
        while not first_seen.wait(HEARTBEAT_UPDATES * self.config.update_interval):
            waited = time.monotonic() - started
            with contextlib.suppress(SlackApiError):
                reply.progress(
                    f"{layout.WORKING} _thinking… ({model}) · reading the conversation, {waited:.0f} s_"
                )

    def _thread(self, question: Question) -> list[dict]:
        messages: list[dict] = []
        cursor = None
        for _ in range(HISTORY_PAGES):
            page = self.client.conversations_replies(
                channel=question.channel, ts=question.thread_ts, limit=200, cursor=cursor
            )
            messages.extend(page.get("messages", []))
            cursor = (page.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                break
        return messages


class _TokenUnusedWarningFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "`token` will be unused" not in record.getMessage()
