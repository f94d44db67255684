"""serve-chatterbox's request parsing for model and voice names (lenient by default, strict as a flag): the
parser alone, no model load (runs in the controller venv)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from ttsbench.chatterbox.server import BadRequest, Handler, ServerConfig


def _parse(cfg: ServerConfig, req: dict) -> tuple:
    return Handler._parse(SimpleNamespace(cfg=cfg), json.dumps(req).encode())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("model", "voice"), [("tts-1", "alloy"), ("gpt-4o-mini-tts", "nova"), (None, "voice"), ("chatterbox", None)]
)
def test_lenient_default_takes_openai_names(model, voice):
    cfg = ServerConfig(voice="voice")
    req = {"input": "Hi.", **({"model": model} if model else {}), **({"voice": voice} if voice else {})}
    assert _parse(cfg, req)[0] == "Hi."


def test_strict_takes_only_configured_names():
    cfg = ServerConfig(voice="voice", strict=True, accept_models=("tts-1",), voice_aliases=("alloy",))
    assert _parse(cfg, {"input": "Hi.", "model": "tts-1", "voice": "alloy"})[0] == "Hi."
    assert _parse(cfg, {"input": "Hi.", "model": "chatterbox", "voice": "default"})[0] == "Hi."
    with pytest.raises(BadRequest, match=r"unknown voice 'nova'.*--voice-alias") as e:
        _parse(cfg, {"input": "Hi.", "voice": "nova"})
    assert e.value.status == 400
    with pytest.raises(BadRequest, match=r"unknown model 'tts-1-hd'.*--accept-model"):
        _parse(cfg, {"input": "Hi.", "model": "tts-1-hd"})


def test_cli_flags_reach_the_config():
    import argparse

    from ttsbench.commands import serve_chatterbox

    ap = argparse.ArgumentParser()
    serve_chatterbox.register(ap.add_subparsers())
    args = ap.parse_args(
        [
            "serve-chatterbox",
            "--reference",
            "r.wav",
            "--strict",
            "--accept-model",
            "tts-1",
            "--voice-alias",
            "alloy",
            "--voice-alias",
            "nova",
        ]
    )
    assert args.strict and args.accept_model == ["tts-1"] and args.voice_alias == ["alloy", "nova"]


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        (
            "Dr. Siobhan O'Connor and Mr. Nguyen Van Thanh will join.",
            ["Dr. Siobhan O'Connor and Mr. Nguyen Van Thanh will join."],
        ),
        ("Got it. I've set a reminder.", ["Got it.", "I've set a reminder."]),
        ("I met J. R. Smith at 5 p.m. Then we left.", ["I met J. R. Smith at 5 p.m.", "Then we left."]),
        ("Room No. 5 is free. Go!", ["Room No. 5 is free.", "Go!"]),
        ("He said no. Then yes.", ["He said no.", "Then yes."]),
        ("Wait; really? Yes: fine.", ["Wait; really?", "Yes: fine."]),
        ("  Okay.  ", ["Okay."]),
        ("", []),
    ],
)
def test_split_sentences_keeps_titles_initials_and_abbreviations(text, sentences):
    """The server synthesizes sentence by sentence (each one a T3 prefill and a first chunk); "Dr." or an
    initial is no sentence of its own (the canonical u05 used to be spoken as three)."""
    from ttsbench.chatterbox.server import split_sentences

    assert split_sentences(text) == sentences


@pytest.mark.parametrize(
    ("flags", "refused"),
    [
        (["--s3-compile", "on"], True),  # batched vocoding is the default with 4 batch slots
        (["--s3-compile", "on", "--vocoder-batching", "off"], False),
        (["--s3-compile", "on", "--batch-slots", "0"], False),
        (["--s3-compile", "on", "--batch-slots", "1"], False),
        (["--vocoder-batching", "on"], False),
    ],
)
def test_s3_compile_with_batched_vocoding_is_refused_before_loading(monkeypatch, flags, refused):
    """--s3-compile on with batched vocoding crashed or hung at c=4 on the H100 (2026-12-07): refused at once,
    with what to do instead; the other combinations reach serve()."""
    import argparse

    from ttsbench.chatterbox import server
    from ttsbench.commands import serve_chatterbox
    from ttsbench.errors import UserError

    served = []
    monkeypatch.setattr(server, "serve", lambda cfg: served.append(cfg) or 0)
    ap = argparse.ArgumentParser()
    serve_chatterbox.register(ap.add_subparsers())
    args = ap.parse_args(["serve-chatterbox", "--reference", "r.wav", *flags])
    if refused:
        with pytest.raises(UserError, match=r"--vocoder-batching off"):
            args.func(args)
        assert served == []
    else:
        assert args.func(args) == 0 and len(served) == 1
