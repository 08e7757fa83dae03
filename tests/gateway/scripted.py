"""A scripted engine for tests of output parsing: the real gateway and chat template, with the
model's output replaced by a given text (random weights never write a tool call)."""

from __future__ import annotations

from engine.outputs import GenerationChunk, Timings


class ScriptedStream:
    """A RequestStream whose output is a given text, in pieces of a few characters."""

    def __init__(self, prompt_ids: list[int], text: str, piece: int = 5):
        self.prompt_tokens = len(prompt_ids)
        self._pieces = [text[i : i + piece] for i in range(0, len(text), piece)] or [""]
        self._i = 0

    def __aiter__(self):
        return self

    async def __anext__(self) -> GenerationChunk:
        if self._i >= len(self._pieces):
            raise StopAsyncIteration
        self._i += 1
        last = self._i == len(self._pieces)
        return GenerationChunk(
            token_ids=[0],
            text=self._pieces[self._i - 1],
            finish_reason="stop" if last else None,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self._i,
            timings=Timings(prompt_n=self.prompt_tokens, prompt_ms=1.0, predicted_n=self._i, predicted_ms=1.0)
            if last
            else None,
        )

    def cancel(self) -> None:
        self._i = len(self._pieces)


class ScriptedScheduler:
    """Answers every request with `script` and keeps the prompts it was given; the rest is the real one's."""

    def __init__(self, real):
        self._real = real
        self.script = ""
        self.prompts: list[list[int]] = []

    def submit(self, prompt_ids, params):
        self.prompts.append(list(prompt_ids))
        return ScriptedStream(prompt_ids, self.script)

    def __getattr__(self, name):
        return getattr(self._real, name)
