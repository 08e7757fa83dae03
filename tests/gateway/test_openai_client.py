"""The official `openai` client against the gateway on the real engine (SmolLM2)."""

from __future__ import annotations

import threading

import openai
import pytest

from gateway.settings import GatewaySettings

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def client(live, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=live.url + "/v1", api_key=key, max_retries=0, timeout=300)


def test_models(smol_server):
    models = client(smol_server).models.list()
    assert [m.id for m in models.data] == ["smollm2"]


def test_chat_stream_equals_non_stream(smol_server):
    c = client(smol_server)
    full = c.chat.completions.create(model="smollm2", messages=QUESTION, max_tokens=8, temperature=0)
    choice = full.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert full.usage.prompt_tokens > 0
    assert 0 < full.usage.completion_tokens <= 8
    assert full.usage.total_tokens == full.usage.prompt_tokens + full.usage.completion_tokens
    assert full.usage.completion_tokens_details.reasoning_tokens == 0
    timings = full.model_extra["timings"]
    assert timings["prompt_n"] == full.usage.prompt_tokens
    assert timings["predicted_n"] == full.usage.completion_tokens
    assert timings["predicted_per_second"] > 0

    chunks = list(
        c.chat.completions.create(
            model="smollm2",
            messages=QUESTION,
            max_tokens=8,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert len({ch.id for ch in chunks}) == 1
    assert all(ch.object == "chat.completion.chunk" for ch in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == choice.message.content  # greedy: the same tokens either way
    finals = [ch for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].choices[0].finish_reason == choice.finish_reason
    last = chunks[-1]
    assert last.choices == []
    assert last.usage.completion_tokens == full.usage.completion_tokens
    assert last.usage.prompt_tokens == full.usage.prompt_tokens


def test_stream_without_include_usage_has_no_usage_chunk(smol_server):
    chunks = list(
        client(smol_server).chat.completions.create(
            model="smollm2", messages=QUESTION, max_tokens=3, temperature=0, stream=True
        )
    )
    assert all(ch.choices for ch in chunks)
    assert chunks[-1].choices[0].finish_reason == "length"


def test_content_parts_and_max_completion_tokens(smol_server):
    c = client(smol_server)
    parts = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is the capital "},
                {"type": "text", "text": "of France?"},
            ],
        }
    ]
    a = c.chat.completions.create(model="smollm2", messages=parts, max_completion_tokens=4, temperature=0)
    b = c.chat.completions.create(model="smollm2", messages=QUESTION, max_tokens=4, temperature=0)
    assert a.choices[0].message.content == b.choices[0].message.content
    assert a.usage.completion_tokens <= 4


def test_stop_string_and_seed(smol_server):
    c = client(smol_server)
    plain = c.chat.completions.create(model="smollm2", messages=QUESTION, max_tokens=8, temperature=0)
    text = plain.choices[0].message.content
    word = text.split()[1] if len(text.split()) > 1 else text[1:3]
    cut = c.chat.completions.create(
        model="smollm2", messages=QUESTION, max_tokens=8, temperature=0, stop=[word]
    )
    assert cut.choices[0].message.content == text[: text.index(word)]
    assert cut.choices[0].finish_reason == "stop"
    kw = dict(model="smollm2", messages=QUESTION, max_tokens=6, temperature=1.0, seed=1234)
    assert (
        c.chat.completions.create(**kw).choices[0].message.content
        == c.chat.completions.create(**kw).choices[0].message.content
    )


def test_completions(smol_server):
    c = client(smol_server)
    full = c.completions.create(
        model="smollm2", prompt="The capital of France is", max_tokens=5, temperature=0
    )
    assert full.object == "text_completion"
    assert full.choices[0].text
    assert full.usage.completion_tokens <= 5
    stream = list(
        c.completions.create(
            model="smollm2",
            prompt="The capital of France is",
            max_tokens=5,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(ch.choices[0].text for ch in stream if ch.choices) == full.choices[0].text
    assert stream[-1].choices == [] and stream[-1].usage.completion_tokens == full.usage.completion_tokens


def test_errors_raise_the_right_exception_classes(smol_server):
    c = client(smol_server)
    with pytest.raises(openai.NotFoundError) as e:
        c.chat.completions.create(model="gpt-4o", messages=QUESTION)
    assert "smollm2" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="smollm2", messages=QUESTION, n=2)
    assert e.value.param == "n"
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(
            model="smollm2",
            messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}],
        )
    assert "text only" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="smollm2", messages=QUESTION, temperature=-1)
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "hello " * 1500}])
    assert e.value.code == "context_length_exceeded"
    assert "1024" in e.value.message  # the context; the prompt's own count is in the message too
    with pytest.raises(openai.BadRequestError) as e:  # also in a stream: before any event is sent
        c.chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": "hello " * 1500}], stream=True
        )


def test_auth(smollm2, serve):
    live = serve(smollm2, GatewaySettings(api_key="s3cret"))
    with pytest.raises(openai.AuthenticationError):
        client(live, "wrong").models.list()
    assert [m.id for m in client(live, "s3cret").models.list().data]
    with live.client() as http:
        assert http.get("/v1/models").status_code == 401  # no header at all
        assert http.get("/health").status_code == 200  # open without a key


def test_loading_then_ready(smollm2, serve):
    release = threading.Event()

    def load():
        release.wait(60)
        return smollm2

    live = serve(load, wait_ready=False)
    with live.client() as http:
        r = http.get("/health")
        assert r.status_code == 503 and r.json()["status"] == "loading"
    with pytest.raises(openai.InternalServerError) as e:
        client(live).chat.completions.create(model="smollm2", messages=QUESTION)
    assert e.value.status_code == 503
    release.set()
    assert live.host.ready_event.wait(60)
    with live.client() as http:
        assert http.get("/health").status_code == 200
    assert client(live).chat.completions.create(messages=QUESTION, model="", max_tokens=1).choices


def test_queue_full_is_429(smollm2, serve):
    live = serve(smollm2, GatewaySettings(max_running=1, max_waiting=1))
    c = client(live)
    first = c.chat.completions.create(model="", messages=QUESTION, max_tokens=200, temperature=0, stream=True)
    next(iter(first))  # running now
    second = c.chat.completions.create(
        model="", messages=QUESTION, max_tokens=200, temperature=0, stream=True
    )
    assert live.stats().waiting == 1
    with pytest.raises(openai.RateLimitError):
        c.chat.completions.create(model="", messages=QUESTION, max_tokens=1)
    first.close()
    second.close()
    s = live.wait_idle()
    assert s.kv_cache_bytes == 0


def test_model_that_fails_to_load(serve, tmp_path):
    from engine.llm import LLM

    missing = tmp_path / "missing.gguf"
    live = serve(lambda: LLM.from_gguf(missing, progress=False))
    with live.client() as http:
        r = http.get("/health")
        assert r.status_code == 503 and r.json()["status"] == "error"
        assert "missing.gguf" in r.json()["message"]
    with pytest.raises(openai.InternalServerError) as e:
        client(live).chat.completions.create(model="", messages=QUESTION)
    assert e.value.status_code == 503 and "missing.gguf" in e.value.message
