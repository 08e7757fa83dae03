"""An Ollama client's flow (as Page Assist does it): version, tags, show, then chat and generate."""

from __future__ import annotations

from sse_reader import read_ndjson

OPTIONS = {"temperature": 0, "num_predict": 6}
MESSAGES = [{"role": "user", "content": "Why is the sky blue?"}]


def test_client_flow(smol_server):
    with smol_server.client() as http:
        assert http.get("/").text == "Ollama is running"  # the probe Ollama clients make
        assert http.get("/api/version").json()["version"]
        assert [m["name"] for m in http.get("/api/ps").json()["models"]] == ["smollm2"]
        tags = http.get("/api/tags").json()["models"]
        assert [m["name"] for m in tags] == ["smollm2"]
        assert tags[0]["details"]["format"] == "gguf" and tags[0]["details"]["family"] == "llama"
        assert tags[0]["size"] > 50_000_000
        show = http.post("/api/show", json={"model": "smollm2"}).json()
        assert "{%" in show["template"] and show["model_info"]["llama.context_length"] == 1024

        full = http.post(
            "/api/chat", json={"model": "smollm2", "messages": MESSAGES, "stream": False, "options": OPTIONS}
        )
        assert full.status_code == 200
        body = full.json()
        assert body["done"] is True and body["done_reason"] == "length"
        assert body["message"]["role"] == "assistant" and body["message"]["content"]
        assert "thinking" not in body["message"]
        assert body["eval_count"] == 6 and body["prompt_eval_count"] > 0
        assert body["total_duration"] >= body["eval_duration"] > 0

        with http.stream(
            "POST", "/api/chat", json={"model": "smollm2:latest", "messages": MESSAGES, "options": OPTIONS}
        ) as r:
            assert r.headers["content-type"].startswith("application/x-ndjson")
            lines = read_ndjson(r)
        assert all(not ln["done"] for ln in lines[:-1]) and lines[-1]["done"] is True
        assert "".join(ln["message"]["content"] for ln in lines) == body["message"]["content"]
        assert lines[-1]["eval_count"] == 6


def test_generate(smol_server):
    with smol_server.client() as http:
        req = {"model": "smollm2", "prompt": "Why is the sky blue?", "options": OPTIONS}
        full = http.post("/api/generate", json={**req, "stream": False}).json()
        assert full["done"] and full["response"]
        with http.stream("POST", "/api/generate", json=req) as r:
            lines = read_ndjson(r)
        assert "".join(ln["response"] for ln in lines) == full["response"]
        # The chat template is applied: the same as /api/chat with one user message.
        chat = http.post(
            "/api/chat", json={"model": "smollm2", "messages": MESSAGES, "stream": False, "options": OPTIONS}
        )
        assert chat.json()["message"]["content"] == full["response"]
        raw = http.post("/api/generate", json={**req, "raw": True, "stream": False}).json()
        assert raw["prompt_eval_count"] < full["prompt_eval_count"]  # no template around it
        # Load calls (empty prompt / no messages) answer at once.
        assert http.post("/api/generate", json={"model": "smollm2"}).json()["done_reason"] == "load"
        assert http.post("/api/chat", json={"model": "smollm2", "messages": []}).json()["done"] is True


def test_errors(smol_server):
    with smol_server.client() as http:
        r = http.post(
            "/api/chat",
            json={"model": "smollm2", "messages": [{"role": "user", "content": "hi", "images": ["aGk="]}]},
        )
        assert r.status_code == 400 and "text only" in r.json()["error"]
        r = http.post("/api/generate", json={"model": "smollm2", "prompt": 5})
        assert r.status_code == 400 and isinstance(r.json()["error"], str)
        r = http.post("/api/generate", json={"model": "smollm2", "prompt": "hi " * 1500, "stream": False})
        assert r.status_code == 400 and "1024" in r.json()["error"]
