"""LLM description writer against a fake OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import http.server
import json
import threading

import pytest

from harness.data.descriptions import load_descriptions
from harness.describe import parse_answer, write_descriptions
from harness.errors import HarnessError


class _FakeLLM:
    """Answers chat completions with canned text; records every request body."""

    def __init__(self, answer) -> None:
        self.answer = answer  # str, or callable(prompt) -> str
        self.requests: list[dict] = []
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                body["_auth"] = self.headers.get("Authorization")
                body["_path"] = self.path
                fake.requests.append(body)
                prompt = body["messages"][-1]["content"]
                text = fake.answer(prompt) if callable(fake.answer) else fake.answer
                data = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    for var in ("HARNESS_LLM_URL", "HARNESS_LLM_MODEL", "HARNESS_LLM_KEY"):
        monkeypatch.delenv(var, raising=False)


def _good(prompt: str) -> str:
    kind = "look" if "SEEN" in prompt else "motion"
    name = prompt.split('"')[1]
    return f"Here you go:\n1. A video about {name} {kind} one.\n2. A video about {name} {kind} two.\n"


def test_writes_files_and_reuses_cache(tmp_path, monkeypatch):
    llm = _FakeLLM(_good)
    try:
        monkeypatch.setenv("HARNESS_LLM_URL", llm.url)
        monkeypatch.setenv("HARNESS_LLM_MODEL", "fake-model")
        monkeypatch.setenv("HARNESS_LLM_KEY", "sk-test")
        out = write_descriptions(
            ["juggling", "yo-yo"], tmp_path / "ds" / "description", "embedded", cache_dir=tmp_path / "llm"
        )
        assert len(llm.requests) == 4
        assert (
            llm.requests[0]["_path"] == "/v1/chat/completions"
            and llm.requests[0]["_auth"] == "Bearer sk-test"
        )
        assert llm.requests[0]["model"] == "fake-model"
        spatial = json.loads(out["s"].read_text())
        assert out["s"].name == "2_s_description_embedded.json"
        assert spatial == {
            "0": ["A video about juggling look one.", "A video about juggling look two."],
            "1": ["A video about yo-yo look one.", "A video about yo-yo look two."],
        }
        loaded = load_descriptions("etl4video", tmp_path / "ds", "embedded", 2, [0, 1])
        assert loaded.temporal[1] == ["A video about yo-yo motion one.", "A video about yo-yo motion two."]

        out["s"].unlink()
        again = write_descriptions(
            ["juggling", "yo-yo"], tmp_path / "ds" / "description", "embedded", cache_dir=tmp_path / "llm"
        )
        assert len(llm.requests) == 4, "the second run must be served from the cache"
        assert json.loads(again["s"].read_text()) == spatial
    finally:
        llm.close()


def test_short_answer_is_a_clear_error_and_not_cached(tmp_path):
    llm = _FakeLLM("A video about only one thing.")
    try:
        with pytest.raises(HarnessError) as err:
            write_descriptions(
                ["juggling"],
                tmp_path / "out",
                "x",
                n=2,
                endpoint=llm.url,
                model="m",
                cache_dir=tmp_path / "llm",
            )
        msg = str(err.value)
        assert "1 usable line(s) instead of 2" in msg and "'juggling'" in msg and "spatial" in msg
        assert not list((tmp_path / "llm").glob("*.json"))
        assert not (tmp_path / "out" / "2_s_description_x.json").exists()
    finally:
        llm.close()


def test_dry_run_prints_prompts_and_writes_nothing(tmp_path, capsys):
    out = write_descriptions(["juggling"], tmp_path / "out", "x", n=3, dry_run=True)
    printed = capsys.readouterr().out
    assert '"juggling"' in printed and "exactly 3" in printed and printed.count("\n") == 2
    assert out["t"] == tmp_path / "out" / "3_t_description_x.json" and not (tmp_path / "out").exists()


def test_missing_configuration_names_the_env_vars(tmp_path):
    with pytest.raises(HarnessError, match="HARNESS_LLM_URL.*HARNESS_LLM_MODEL"):
        write_descriptions(["juggling"], tmp_path, "x")


def test_parse_answer_strips_bullets_and_ignores_chatter():
    text = 'Sure!\n- "A video about a ball."\n2) A video about a cup.\n* A video about a hat.\n'
    assert parse_answer(text, 2) == ["A video about a ball.", "A video about a cup."]
