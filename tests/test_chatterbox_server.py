"""``ttsbench serve-chatterbox`` on a random-init checkpoint (CPU): health, WAV/PCM, streaming, bad input, token."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import _chatterbox_env
from ttsbench.httpserve import free_port

pytestmark = pytest.mark.chatterbox
TOKEN = "test-token-123"
MAX_TOKENS = "8"


def _serve_argv(ckpt: Path, ref: Path, port: int, *extra: str) -> list[str]:
    return _chatterbox_env.serve_argv(ckpt, ref, port, "--max-new-tokens", MAX_TOKENS, "--max-chars", "200", *extra)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    import httpx

    ckpt = _chatterbox_env.checkpoint()
    tmp = tmp_path_factory.mktemp("cbserver")
    ref = _chatterbox_env.reference_wav(tmp / "voice.wav", 2.0)
    (tmp / "token").write_text(TOKEN + "\n")
    port = free_port()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    argv = _serve_argv(ckpt, ref, port, "--token-file", str(tmp / "token"))
    with _chatterbox_env.serve_chatterbox(argv, port, tmp / "server.log", headers=auth) as url:
        client = httpx.Client(base_url=url, timeout=600, headers=auth)
        yield {"url": url, "client": client, "log": tmp / "server.log"}


def _decode_wav(body: bytes) -> tuple[np.ndarray, int]:
    from ttsbench.wavstream import StreamDecoder

    dec = StreamDecoder("wav")
    dec.feed(body)
    x = dec.finish()
    return x, int(dec.sample_rate or 0)


def test_health_reports_model_device_patch_weights_voice(server: dict) -> None:
    h = server["client"].get("/health").json()
    assert h["status"] == "ok" and h["model_loaded"] is True
    assert h["device"] == "cpu"
    assert h["weights"] == "random-init"
    assert h["voice"] == "voice"
    assert h["stft_patch"]["mode"] == "auto" and "active" in h["stft_patch"]
    assert h["tuning"] == {"cfg_weight": 0.3, "exaggeration": 0.3, "temperature": 0.6}
    models = server["client"].get("/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["chatterbox"]


def test_token_is_enforced(server: dict) -> None:
    import httpx

    assert httpx.get(server["url"] + "/health", timeout=10).status_code == 401
    r = httpx.post(
        server["url"] + "/v1/audio/speech", json={"input": "Hi."}, timeout=10, headers={"Authorization": "Bearer wrong"}
    )
    assert r.status_code == 401 and r.json()["error"]["code"] == 401


def test_whole_wav_is_24khz_and_not_silent(server: dict) -> None:
    r = server["client"].post(
        "/v1/audio/speech",
        json={"input": "Hello there.", "model": "chatterbox", "voice": "voice", "response_format": "wav"},
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "audio/wav"
    x, sr = _decode_wav(r.content)
    assert sr == 24000
    assert x.size > 2400 and np.isfinite(x).all()
    assert float(np.sqrt(np.mean(x**2))) > 1e-3


def test_streamed_wav_decodes_one_chunk_per_sentence(server: dict) -> None:
    chunks = []
    with server["client"].stream(
        "POST", "/v1/audio/speech", json={"input": "One. Two.", "response_format": "wav", "stream": True}
    ) as r:
        assert r.status_code == 200
        assert r.headers.get("transfer-encoding") == "chunked"
        chunks = list(r.iter_raw())
    body = b"".join(chunks)
    assert body[:4] == b"RIFF" and body[40:44] == b"\xff\xff\xff\xff"  # streamed: size unknown
    x, sr = _decode_wav(body)
    assert sr == 24000 and x.size > 4800 and float(np.abs(x).max()) > 0


def test_openai_style_model_and_voice_names_are_accepted_by_default(server: dict) -> None:
    """An OpenAI-style consumer switched to us in a failover sends its own names (lenient default)."""
    r = server["client"].post("/v1/audio/speech", json={"input": "Hi.", "model": "tts-1", "voice": "alloy"})
    assert r.status_code == 200, r.text
    x, sr = _decode_wav(r.content)
    assert sr == 24000 and x.size > 0
    assert server["client"].get("/health").json()["accepts"]["strict"] is False


def test_pcm_is_declared_by_headers(server: dict) -> None:
    r = server["client"].post("/v1/audio/speech", json={"input": "Hi.", "response_format": "pcm"})
    assert r.status_code == 200
    assert r.headers["x-sample-rate"] == "24000" and r.headers["x-sample-format"] == "s16le"
    assert len(r.content) % 2 == 0 and len(r.content) > 0 and r.content[:4] != b"RIFF"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"input": "Hi.", "response_format": "mp3"}, 400),
        ({"input": "a" * 201}, 413),
        ({"input": "   "}, 400),
        ({"input": "Hi.", "voice": 7}, 400),
        ({"input": "Hi.", "stream": "yes"}, 400),
        ([1, 2, 3], 400),
    ],
)
def test_bad_requests_get_4xx_json(server: dict, body: object, status: int) -> None:
    r = server["client"].post("/v1/audio/speech", json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == status


def test_server_keeps_serving_after_bad_requests(server: dict) -> None:
    c = server["client"]
    bad = c.post("/v1/audio/speech", content=b"{not json", headers={"Content-Type": "application/json"})
    assert bad.status_code == 400
    assert c.post("/v1/audio/nowhere", json={"input": "Hi."}).status_code == 404
    r = c.post("/v1/audio/speech", json={"input": "Still here."})
    assert r.status_code == 200
    x, sr = _decode_wav(r.content)
    assert sr == 24000 and x.size > 0


def _start_fails(argv: list[str]) -> str:
    res = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=_chatterbox_env.env_for_checkout())
    assert res.returncode != 0
    return res.stderr


def test_refuses_to_start_with_a_bad_reference(tmp_path: Path) -> None:
    ckpt = _chatterbox_env.checkpoint()
    port = free_port()
    err = _start_fails(_serve_argv(ckpt, tmp_path / "missing.wav", port))
    assert "does not exist" in err
    short = _chatterbox_env.reference_wav(tmp_path / "short.wav", 0.5)
    assert "at least 1 s" in _start_fails(_serve_argv(ckpt, short, port))
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    assert "not a readable audio file" in _start_fails(_serve_argv(ckpt, corrupt, port))


def test_refuses_weights_dir_missing_a_file(tmp_path: Path) -> None:
    ckpt = _chatterbox_env.checkpoint()
    partial = tmp_path / "ckpt"
    partial.mkdir()
    for name in ("ve.safetensors", "tokenizer.json", "s3gen.safetensors"):
        (partial / name).symlink_to(ckpt / name)
    ref = _chatterbox_env.reference_wav(tmp_path / "voice.wav", 2.0)
    err = _start_fails(_serve_argv(partial, ref, free_port()))
    assert "is missing t3_cfg.safetensors" in err


def test_smoke_command_reports_facts(tmp_path: Path) -> None:
    python = _chatterbox_env.chatterbox_python()
    ckpt = _chatterbox_env.checkpoint()
    res = subprocess.run(
        [
            python,
            "-m",
            "ttsbench",
            "chatterbox-smoke",
            "--weights",
            str(ckpt),
            "--device",
            "cpu",
            "--max-new-tokens",
            MAX_TOKENS,
            "--text",
            "Hi.",
            "--out",
            str(tmp_path / "s.wav"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env=_chatterbox_env.env_for_checkout(),
    )
    assert res.returncode == 0, res.stderr[-3000:]
    facts = json.loads(res.stdout.strip().splitlines()[-1])
    assert facts["ok"] and facts["sample_rate"] == 24000 and facts["finite"] and facts["rms"] > 0
    assert facts["weights"] == "random-init" and facts["chatterbox"] == "0.1.7" and facts["torch"]
    assert (tmp_path / "s.wav").is_file()
