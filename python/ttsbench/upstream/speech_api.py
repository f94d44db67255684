"""What a vllm-omni version's ``POST /v1/audio/speech`` accepts and streams, from its stored contract.

The contracts (``contracts/<version>.json``) are extracted from the registry's wheels by
:mod:`ttsbench.upstream.vllm_omni_contract`; tests/test_vllm_omni_contract.py re-extracts and compares them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any


class SpeechApiError(ValueError):
    """A request the server version would refuse or cannot stream."""


def known_versions() -> list[str]:
    folder = resources.files("ttsbench.upstream") / "contracts"
    return sorted(p.name.removesuffix(".json") for p in folder.iterdir() if p.name.endswith(".json"))


def load_contract(version: str) -> dict[str, Any]:
    v = version.removeprefix("v")
    if v not in known_versions():
        raise SpeechApiError(
            f"no stored vllm-omni contract for {version!r} "
            f"(known: {', '.join(known_versions())}); for a build between releases pass the "
            "release whose API it has (bench-voxtral: voxtral_speech_contract), "
            "or extract one with `python -m ttsbench.upstream.vllm_omni_contract VERSION OUT.json`"
        )
    return json.loads((resources.files("ttsbench.upstream") / "contracts" / f"{v}.json").read_text())


@dataclass(frozen=True)
class StreamChoice:
    response_format: str
    stream: str  # audio | sse | none
    pcm_sample_rate: int | None


def choose_stream(
    contract: dict[str, Any], engine: str, response_format: str | None, stream: str | None, pcm_sample_rate: int | None
) -> StreamChoice:
    """The response format / stream mode to use with this version, or SpeechApiError saying what to pass."""
    sp = contract["speech"]
    v = contract["version"]
    voxtral = engine == "voxtral"
    streamable = sp["voxtral_stream_response_formats"] if voxtral else sp["stream_response_formats"]
    stream = stream or ("audio" if "audio" in sp["stream_formats"] else "none")
    if stream != "none" and stream not in sp["stream_formats"]:
        raise SpeechApiError(
            f"vllm-omni {v} does not accept stream_format={stream!r} "
            f"(it accepts {sp['stream_formats']}); pass --stream "
            f"{' or '.join(sp['stream_formats'] + ['none'])}"
        )
    if response_format is None:
        response_format = "wav" if stream == "none" or "wav" in streamable else streamable[0]
    if response_format not in sp["response_formats"]:
        raise SpeechApiError(f"vllm-omni {v} has no response_format={response_format!r}")
    if stream != "none" and response_format not in streamable:
        why = (
            " (its Voxtral output carries no sample rate, which WAV streaming needs)"
            if voxtral and response_format == "wav" and sp["wav_stream_needs_sample_rate"]
            else ""
        )
        raise SpeechApiError(
            f"vllm-omni {v} cannot stream {response_format!r} for {engine}{why}; "
            f"pass --response-format {' or '.join(streamable)} or --stream none"
        )
    rate = None
    if response_format == "pcm":
        rate = pcm_sample_rate or (sp["voxtral_sample_rate"] if voxtral else None)
        if rate is None:
            raise SpeechApiError("raw PCM carries no rate: pass --pcm-sample-rate")
    return StreamChoice(response_format, stream, rate)


def check_payload(contract: dict[str, Any], engine: str, payload: dict[str, Any]) -> None:
    """Refuse fields the version's request model does not declare (pydantic would drop them silently)."""
    sp = contract["speech"]
    unknown = sorted(set(payload) - set(sp["fields"]))
    if unknown:
        raise SpeechApiError(f"vllm-omni {contract['version']} speech requests have no field(s) {unknown}")
    if (
        engine == "voxtral"
        and sp["voxtral_needs_voice_or_ref_audio"]
        and not (payload.get("voice") or payload.get("ref_audio"))
    ):
        raise SpeechApiError(f"Voxtral on vllm-omni {contract['version']} needs a voice (--voice) or ref_audio")
