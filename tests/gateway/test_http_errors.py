"""Bad requests of every kind get a 4xx in OpenAI's error shape (never a 5xx or a traceback)."""

from __future__ import annotations

import logging

import pytest

from gateway.app import RequestIdLogFilter
from gateway.settings import GatewaySettings

GOOD = {"model": "smollm2", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}


def assert_openai_error(r, status: int):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    assert "Traceback" not in r.text
    return err


def test_malformed_json(smol_server):
    with smol_server.client() as http:
        r = http.post(
            "/v1/chat/completions", content=b'{"messages": [', headers={"content-type": "application/json"}
        )
        assert_openai_error(r, 400)
        r = http.post("/v1/chat/completions", content=b"\xff\xfe not json")
        assert_openai_error(r, 400)
        r = http.post("/v1/chat/completions", content=b"")
        assert r.status_code == 400


@pytest.mark.parametrize(
    "change",
    [
        {"messages": "hi"},
        {"messages": []},
        {"messages": [{"role": "wizard", "content": "hi"}]},
        {"messages": [{"content": "hi"}]},
        {"temperature": "hot"},
        {"temperature": -0.5},
        {"top_p": 1.5},
        {"max_tokens": 0},
        {"max_tokens": "many"},
        {"stop": ["a", "b", "c", "d", "e"]},
        {"stop": 7},
        {"n": 0},
        {"stream": "yes"},
        {"seed": 2**70},
        {"stream_options": {"include_usage": "please"}},
    ],
)
def test_wrong_types_and_ranges(smol_server, change):
    with smol_server.client() as http:
        err = assert_openai_error(http.post("/v1/chat/completions", json={**GOOD, **change}), 400)
    assert err["type"] == "invalid_request_error"


def test_unknown_fields_are_ignored(smol_server):
    with smol_server.client() as http:
        r = http.post("/v1/chat/completions", json={**GOOD, "logit_bias": {}, "some_future_field": [1, 2]})
    assert r.status_code == 200


def test_huge_body_is_413(smol_server):
    huge = b'{"messages": [{"role": "user", "content": "' + b"a" * (9 * 1024 * 1024) + b'"}]}'
    with smol_server.client() as http:
        assert_openai_error(http.post("/v1/chat/completions", content=huge), 413)


def test_unknown_route_and_method(smol_server):
    with smol_server.client() as http:
        assert_openai_error(http.get("/v1/nothing"), 404)
        assert_openai_error(http.get("/v1/chat/completions"), 405)
        r = http.post("/api/chat", json={"model": "nope", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 404 and "nope" in r.json()["error"]  # Ollama's error shape on /api


def test_request_id_header_and_log_lines(smol_server, caplog):
    caplog.handler.addFilter(RequestIdLogFilter())
    with smol_server.client() as http, caplog.at_level(logging.INFO):
        r = http.post("/v1/chat/completions", json=GOOD)
        rid = r.headers["x-request-id"]
        assert http.get("/v1/nothing").headers["x-request-id"]
        assert (
            http.get("/health", headers={"X-Request-ID": "client-id-1"}).headers["x-request-id"]
            == "client-id-1"
        )
    mine = [rec for rec in caplog.records if getattr(rec, "request_id", None) == rid]
    assert {rec.name for rec in mine} >= {"moebox.access", "moebox.generate"}  # the engine thread's line too


def test_cors(smollm2, serve):
    live = serve(smollm2, GatewaySettings(cors_origins=("http://localhost:3000",)))
    with live.client() as http:
        r = http.options(
            "/v1/chat/completions",
            headers={
                "Origin": "http://localhost:3000",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
        assert r.status_code in (200, 204)
        assert r.headers["access-control-allow-origin"] == "http://localhost:3000"
        r = http.get("/health", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in r.headers


def test_metrics(smol_server):
    with smol_server.client() as http:
        assert http.post("/v1/chat/completions", json=GOOD).status_code == 200
        text = http.get("/metrics").text
    for name in (
        "moebox_http_requests_total",
        "moebox_prompt_tokens_total",
        "moebox_completion_tokens_total",
        "moebox_prefill_tokens_per_second_bucket",
        "moebox_decode_tokens_per_second_bucket",
        "moebox_time_to_first_token_seconds_bucket",
        "moebox_queue_waiting",
        "moebox_kv_cache_bytes",
        "moebox_model_loaded 1.0",
    ):
        assert name in text, name
    line = next(ln for ln in text.splitlines() if ln.startswith("moebox_prompt_tokens_total"))
    assert float(line.split()[-1]) > 0


DEEP = b"[" * 1000 + b"]" * 1000  # 2 KB nested 1,000 levels: past the JSON decoder's recursion limit


@pytest.mark.parametrize(
    "path, body",
    [
        ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "hi"}], "x": ' + DEEP + b"}"),
        ("/v1/chat/completions", b'{"messages": ' + DEEP + b"}"),
        ("/v1/completions", DEEP),
        ("/api/chat", b'{"model": "smollm2", "messages": ' + DEEP + b"}"),
        ("/api/generate", b'{"model": "smollm2", "options": ' + DEEP + b"}"),
        ("/v1/messages", b'{"model": "smollm2", "max_tokens": 1, "messages": ' + DEEP + b"}"),
        ("/v1/messages/count_tokens", b'{"model": "smollm2", "tools": ' + DEEP + b"}"),
        (
            "/v1/chat/completions",
            b'{"messages": [{"role": "user", "content": "hi"}], "tools": ' + DEEP + b"}",
        ),
    ],
)
def test_deeply_nested_body_is_400(smol_server, path, body):
    with smol_server.client() as http:
        r = http.post(path, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert "nests too deeply" in r.text and "Traceback" not in r.text
    if path.startswith("/v1/messages"):
        assert r.json()["type"] == "error" and r.json()["error"]["type"] == "invalid_request_error"


def test_deep_tool_schema_is_not_a_500(smol_server):
    """A tool's JSON Schema nested just under the decoder's limit still renders or is refused with a 400."""
    nested: dict = {"type": "object"}
    for _ in range(400):
        nested = {"type": "object", "properties": {"x": nested}}
    body = {
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 1,
        "tools": [{"type": "function", "function": {"name": "f", "parameters": nested}}],
    }
    with smol_server.client() as http:
        r = http.post("/v1/chat/completions", json=body)
    assert r.status_code in (200, 400), r.text
