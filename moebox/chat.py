"""`moebox chat`: an interactive streaming chat with history in the terminal."""

from __future__ import annotations

import sys

from engine.errors import PromptError
from engine.llm import LLM
from engine.sampling_params import SamplingParams
from engine.scheduler import Scheduler

HELP = "Commands: /clear forgets the conversation, /exit (or Ctrl-D) quits."


def chat(
    llm: LLM,
    *,
    params: SamplingParams,
    system: str | None = None,
    force_think: bool = False,
    stdin=sys.stdin,
    stdout=sys.stdout,
) -> None:
    """Read user turns from stdin, stream the model's answers to stdout, keep the history."""
    history: list[dict] = [{"role": "system", "content": system}] if system else []
    # one scheduler for the whole chat: each turn's prompt starts with the earlier turns, whose
    # keys and values its prefix cache keeps (prompts in chunks of 256, as the server runs them)
    scheduler = Scheduler(llm, max_running=1)
    print(f"{llm.model_name}: context {llm.context_length} tokens. {HELP}", file=stdout)
    while True:
        print("\n> ", end="", file=stdout, flush=True)
        line = stdin.readline()
        if not line:
            print(file=stdout)
            return
        text = line.strip()
        if text in ("/exit", "/quit"):
            return
        if text == "/clear":
            history = history[:1] if system else []
            print("(conversation cleared)", file=stdout)
            continue
        if not text:
            continue
        history.append({"role": "user", "content": text})
        answer = []
        try:
            for chunk in llm.generate(history, params, force_think=force_think, scheduler=scheduler):
                answer.append(chunk.text)
                print(chunk.text, end="", file=stdout, flush=True)
                if chunk.finish_reason and chunk.timings:
                    t = chunk.timings
                    print(
                        f"\n[{t.prompt_n} prompt tokens ({chunk.cached_tokens} cached), "
                        f"{t.prompt_per_second:.1f} tok/s prefill; "
                        f"{t.predicted_n} generated, {t.predicted_per_second:.1f} tok/s; {chunk.finish_reason}]",
                        file=stdout,
                    )
        except PromptError as exc:
            history.pop()
            print(f"moebox: {exc} (use /clear to start over)", file=stdout)
            continue
        except KeyboardInterrupt:
            print("\n(interrupted)", file=stdout)
        history.append({"role": "assistant", "content": "".join(answer)})
