"""The Gemma stand-in and probe-llm (the gemma guard consumes probe-llm's JSON)."""

from __future__ import annotations

import json
import subprocess

import httpx
import pytest

from standin_helpers import standin, ttsbench_cmd
from ttsbench.httpserve import free_port

pytestmark = pytest.mark.timeout(60)


def probe(url: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(ttsbench_cmd("probe-llm", url, "--json", *extra), capture_output=True, text=True, timeout=30)


def test_probe_follows_runtime_latency_changes():
    with standin("llm", "--latency-ms", "60") as url:
        r = probe(url, "-n", "5")
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert set(out) >= {"url", "n", "p50_ms", "p90_ms", "mean_ms", "samples_ms", "errors"}
        assert out["n"] == 5 and len(out["samples_ms"]) == 5 and out["errors"] == 0
        assert 60 <= out["p50_ms"] < 90 and out["p50_ms"] <= out["p90_ms"]
        assert httpx.post(f"{url}/standin/latency", json={"latency_ms": 150}).json() == {"latency_ms": 150.0}
        slow = json.loads(probe(url, "-n", "3").stdout)
        assert 150 <= slow["p50_ms"] < 190 and slow["n"] == 3
        assert httpx.post(f"{url}/standin/latency", json={"latency_ms": -1}).status_code == 400
        models = httpx.get(f"{url}/v1/models").json()["data"]
        assert models[0]["id"] == "standin-gemma" and models[0]["standin"] is True


def test_probe_unreachable_is_one_line_and_nonzero():
    r = probe(f"http://127.0.0.1:{free_port()}")
    assert r.returncode == 3 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach LLM" in lines[0]


def test_chat_completion_shape_and_bad_request():
    with standin("llm") as url:
        ok = httpx.post(f"{url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
        assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["role"] == "assistant"
        bad = httpx.post(f"{url}/v1/chat/completions", json={"messages": []})
        assert bad.status_code == 400 and "messages" in bad.json()["error"]["message"]


def test_tts_standin_endpoints():
    with standin("tts", "--voice-label", "casual_male") as url:
        # generous timeouts: espeak-ng synthesis on a loaded 2-core box can take seconds
        assert httpx.get(f"{url}/v1/audio/voices", timeout=30).json()["voices"] == ["casual_male"]
        r = httpx.post(
            f"{url}/v1/audio/speech", json={"input": "hello", "ref_audio": "data:audio/wav;base64,SUQz"}, timeout=30
        )
        assert r.status_code == 400 and "not a WAV" in r.text
        r = httpx.post(f"{url}/v1/audio/speech", json={"input": "hello", "response_format": "wav"}, timeout=30)
        assert r.status_code == 200 and r.content[:4] == b"RIFF" and len(r.content) > 10000
