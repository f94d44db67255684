"""One speech request judged as *good audio*: HTTP 200, decodable WAV, long and loud enough (not silence).

The failover drill uses it to show the outage (errors or silence), to wait for the first good audio from the
standby (recovery time) and to verify the primary after fail-back. A probe can append its row to a system in
a run folder (``results.json`` + ``wavs/<engine>/<host>/<utt_id>.wav``) so the drill's audio is kept.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ttsbench import results
from ttsbench.errors import UserError
from ttsbench.metrics import RequestMetrics, summarize


@dataclass
class ProbeResult:
    url: str
    ok: bool
    error: str | None
    http_status: int | None
    duration_s: float | None
    rms_dbfs: float | None
    total_ms: float | None
    sample_rate: int | None
    t_sent_unix: float
    t_done_unix: float
    attempts: int = 1

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["rms_dbfs"] is not None and d["rms_dbfs"] == float("-inf"):
            d["rms_dbfs"] = None
        return d


def speech_url(url: str) -> str:
    u = url.rstrip("/")
    return u if u.endswith("/v1/audio/speech") else u + "/v1/audio/speech"


def probe_once(
    url: str,
    text: str,
    *,
    voice: str | None,
    model: str | None,
    timeout_s: float,
    min_duration_s: float,
    min_rms_dbfs: float,
    token: str | None = None,
    template: Any = None,
    reference: Any = None,
) -> tuple[ProbeResult, Any]:
    """One non-streaming request; returns (result, samples or None). ``template`` (ttsbench.reqtemplate) speaks
    any TTS API; without it the OpenAI-style speech request is sent."""
    import httpx
    import soundfile as sf

    from ttsbench.audio import rms_dbfs

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if template is None:
        payload: dict[str, Any] = {"input": text, "response_format": "wav"}
        if voice:
            payload["voice"] = voice
        if model:
            payload["model"] = model
        method, target, body = "POST", speech_url(url), json.dumps(payload).encode()
        headers["Content-Type"] = "application/json"
    else:
        from ttsbench import reqtemplate

        req = template.render(url, reqtemplate.values(text, voice=voice, model=model, reference=reference))
        method, target, body = req.method, req.url, req.body
        headers = {**req.headers, **headers}
    t_sent = time.time()
    t0 = time.perf_counter()
    status: int | None = None
    try:
        resp = httpx.request(method, target, content=body or None, headers=headers, timeout=timeout_s)
        status = resp.status_code
        if status != 200:
            raise ValueError(f"HTTP {status}: {resp.text[:200]}")
        samples, sr = _decode(resp, template, timeout_s, headers)
        total_ms = (time.perf_counter() - t0) * 1000.0
    except (httpx.HTTPError, ValueError, RuntimeError, sf.LibsndfileError) as exc:
        err = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        if status == 200 and not isinstance(exc, httpx.HTTPError):
            err = f"not audio: {err}"
        return ProbeResult(url, False, err, status, None, None, None, None, t_sent, time.time()), None
    dur = samples.size / sr if sr else 0.0
    level = rms_dbfs(samples)
    problems = []
    if dur < min_duration_s:
        problems.append(f"{dur:.2f} s audio < {min_duration_s} s")
    if level < min_rms_dbfs:
        problems.append(f"silence: RMS {level:.1f} dBFS < {min_rms_dbfs} dBFS")
    res = ProbeResult(
        url, not problems, "; ".join(problems) or None, status, dur, level, total_ms, int(sr), t_sent, time.time()
    )
    return res, samples


def _decode(resp: Any, template: Any, timeout_s: float, headers: dict[str, str]) -> tuple[Any, int]:
    """Samples (float32 mono) and rate of a 200 answer; ValueError when it holds no audio of the declared kind."""
    import httpx
    import numpy as np
    import soundfile as sf

    from ttsbench import reqtemplate
    from ttsbench.wavstream import StreamDecoder

    spec = template.response if template is not None else reqtemplate.ResponseSpec()
    content = resp.content
    if spec.streamed:
        reqtemplate.check_content_type(resp.headers.get("content-type", ""), content, spec)
    else:
        what, audio = reqtemplate.audio_from_json(content, spec, str(resp.request.url))
        if what == "url":
            fetched = httpx.get(
                str(audio),
                headers={k: v for k, v in headers.items() if k.lower() == "authorization"},
                timeout=timeout_s,
            )
            if fetched.status_code != 200:
                raise ValueError(f"audio URL {audio}: HTTP {fetched.status_code}")
            content = fetched.content
        else:
            content = audio  # type: ignore[assignment]
    if spec.decoder_mode == "pcm":
        dec = StreamDecoder("pcm", spec.sample_rate, spec.pcm_format)
        dec.feed(content)
        return dec.finish(), int(spec.sample_rate or 0)
    if content[:4] != b"RIFF":
        raise ValueError(f"answer is not a WAV file (starts {content[:16]!r})")
    data, sr = sf.read(io.BytesIO(content), dtype="float32", always_2d=True)
    return np.ascontiguousarray(data.mean(axis=1)), int(sr)


def probe_until_ok(url: str, text: str, *, until_ok_s: float, interval_s: float, **kw: Any) -> tuple[ProbeResult, Any]:
    """Repeat ``probe_once`` until good audio or ``until_ok_s`` passed; the last result counts."""
    deadline = time.monotonic() + until_ok_s
    attempts = 0
    while True:
        attempts += 1
        res, samples = probe_once(url, text, **kw)
        res.attempts = attempts
        if res.ok or time.monotonic() >= deadline:
            return res, samples
        time.sleep(interval_s)


def record(
    run_dir: str | Path,
    res: ProbeResult,
    samples: Any,
    *,
    engine: str,
    host: str,
    utt_id: str,
    text: str,
    weights: str,
    standin: bool,
    version: str | None = None,
    template: dict[str, Any] | None = None,
) -> str:
    """Append the probe as a row of system ``engine@host`` in the run folder (WAV kept when audio came back)."""
    from ttsbench.audio import write_wav_atomic

    run = Path(run_dir)
    doc = results.load_results(run)
    wav_rel = None
    if samples is not None and samples.size:
        wav_rel = f"wavs/{engine}/{host}/{utt_id}.wav"
        write_wav_atomic(run / wav_rel, samples, res.sample_rate or 24000)
    audio_s = res.duration_s if res.duration_s else None
    row = RequestMetrics(
        utt_id=utt_id,
        text=text,
        ok=res.ok and bool(audio_s),
        error=res.error if not res.ok else None,
        wav=wav_rel,
        http_status=res.http_status,
        ttfa_ms=res.total_ms,
        total_ms=res.total_ms,
        audio_s=audio_s,
        rtf=(res.total_ms / 1000.0 / audio_s) if (res.ok and audio_s) else None,
        sample_rate=res.sample_rate,
    )
    if not row.ok and not row.error:
        row.error = "no audio"
    sid = f"{engine}@{host}"
    existing = next((s for s in doc["systems"] if s["system_id"] == sid), None)
    rows = [
        RequestMetrics(**{k: v for k, v in r.items() if k in RequestMetrics.__dataclass_fields__})
        for r in (existing or {}).get("utterances", [])
        if r["utt_id"] != utt_id
    ] + [row]
    system = existing or {
        "system_id": sid,
        "engine": {
            "name": engine,
            "version": version,
            "install": "server under test",
            "standin": standin,
            "weights": weights,
        },
        "host": results.remote_host(host),
        "config": {
            "url": res.url,
            "measured_from": "controller over HTTP (failover drill probe)",
            "ttfa_definition": "non-streaming: time until the whole WAV arrived",
        },
    }
    if template is not None:
        system["config"]["request_template"] = template
    system["utterances"] = [r.to_dict() for r in rows]
    system["summary"] = summarize(rows)
    results.put_system(doc, system)
    results.write_results(run, doc)
    return sid


def check_thresholds(min_duration_s: float, min_rms_dbfs: float) -> None:
    if min_duration_s < 0 or min_rms_dbfs > 0:
        raise UserError("--min-duration-s must be >= 0 and --min-rms-dbfs <= 0")
