"""Fast Chatterbox path vs upstream chatterbox 0.1.7 on CPU (random-init weights, a few steps).

The GPU run of the same checks (200 greedy steps, CUDA graphs, bf16) is in benchmarks/chatterbox_fast_path.py.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("chatterbox")
np = pytest.importorskip("numpy")

from ttsbench.chatterbox import checkpoint, fast_equiv, runner  # noqa: E402
from ttsbench.chatterbox.fast import SAMPLES_PER_TOKEN, FastChatterbox, StreamTimings  # noqa: E402
from ttsbench.chatterbox.fast_t3 import FastT3, SamplingParams  # noqa: E402

pytestmark = pytest.mark.chatterbox
PARAMS = SamplingParams(temperature=0.6, cfg_weight=0.3, repetition_penalty=1.2, min_p=0.05, top_p=1.0)


@pytest.fixture(scope="module")
def ckpt() -> Path:
    d = Path(os.environ.get("TTSBENCH_TEST_CHECKPOINT", Path.home() / ".cache/ttsbench/test-checkpoint"))
    path, _ = checkpoint.make_random_checkpoint(d, seed=0)
    return path


@pytest.fixture(scope="module")
def model(ckpt: Path):
    from chatterbox.tts import ChatterboxTTS

    from ttsbench.chatterbox.loading import load_model

    return load_model(lambda: ChatterboxTTS.from_local(ckpt, "cpu"))


@pytest.fixture(scope="module")
def fast(model) -> FastChatterbox:
    return FastChatterbox(model, max_len=256)


def test_teacher_forced_logits_match_upstream_fp32(model, fast: FastChatterbox) -> None:
    res = fast_equiv.logits_check(model, fast.t3, "Sure, I can help.", [5, 100, 6000, 7, 4321], 0.3)
    assert res["steps"] == 6
    assert res["rel_err"] <= 1e-3, res


def test_bf16_logits_stay_close(model) -> None:
    fb = FastT3(model.t3, dtype=torch.bfloat16, max_len=128)
    res = fast_equiv.logits_check(model, fb, "Okay.", [5, 100], 0.3)
    assert 0.0 < res["rel_err"] <= 0.05, res  # bf16 rounding is visible but bounded (≈1.7% measured)


def test_greedy_tokens_match_upstream(model, fast: FastChatterbox) -> None:
    res = fast_equiv.greedy_check(model, fast.t3, "Okay.", 10, PARAMS)
    assert res["steps"] == 10 and res["match"] >= 0.99, res


def test_sampler_matches_the_hf_processors_in_distribution(model) -> None:
    """Many draws from one step's logits follow upstream's processed distribution (CFG, penalty, T, min_p, top_p)."""
    from transformers.generation.logits_process import (
        MinPLogitsWarper,
        RepetitionPenaltyLogitsProcessor,
        TopPLogitsWarper,
    )

    f = FastT3(model.t3, max_len=64)
    g = torch.Generator().manual_seed(0)
    f.logits.copy_(torch.randn(2, f.vocab, generator=g) * 4.0)
    seen_ids = torch.tensor([[f.start_token, 3, 17, 17, 99]])
    params = SamplingParams(temperature=0.6, cfg_weight=0.3, repetition_penalty=1.2, min_p=0.05, top_p=0.9)
    f.seen.zero_()
    f.seen[seen_ids.view(-1)] = True
    f.p_cfg.fill_(params.cfg_weight)
    f.p_pen.fill_(params.repetition_penalty)
    f.p_temp.fill_(params.temperature)
    f.p_minp.fill_(params.min_p)
    f.p_topp.fill_(params.top_p)
    cond, uncond = f.logits[0:1], f.logits[1:2]
    ref = cond + torch.as_tensor(params.cfg_weight) * (cond - uncond)
    ref = RepetitionPenaltyLogitsProcessor(penalty=params.repetition_penalty)(seen_ids, ref) / params.temperature
    ref = MinPLogitsWarper(min_p=params.min_p)(seen_ids, ref)
    ref = TopPLogitsWarper(top_p=params.top_p)(seen_ids, ref)
    p_ref = torch.softmax(ref, dim=-1).view(-1)
    counts = torch.zeros(f.vocab)
    torch.manual_seed(0)
    n = 4000
    seen0 = f.seen.clone()
    for _ in range(n):
        f.n.zero_()
        f.seen.copy_(seen0)  # each draw adds its token to the penalty set; start every draw from the same set
        f._sample(greedy=False, use_top_p=True)
        counts[int(f.tok)] += 1
    support = p_ref > 0
    assert bool((counts[~support] == 0).all()), "drew a token upstream's processors remove"
    tv = 0.5 * float((counts / n - p_ref).abs().sum())
    assert tv < 0.05, tv
    f.n.zero_()
    f.seen.copy_(seen0)
    f._sample(greedy=True, use_top_p=True)
    assert int(f.tok) == int(p_ref.argmax())


def test_s3gen_solver_and_streaming(model, fast: FastChatterbox) -> None:
    """GraphEuler (run eagerly on CPU) = upstream S3Gen for the same tokens and seed; streamed chunks cover the
    whole utterance: as many samples as the whole-utterance vocoding."""
    toks = torch.tensor([11, 2000, 345, 6000, 77, 4040])
    torch.manual_seed(3)
    ref = model.s3gen.inference(speech_tokens=toks, ref_dict=model.conds.gen)[0]
    fast.use_graph = True  # route through GraphEuler (graphs themselves only on CUDA)
    try:
        torch.manual_seed(3)
        got = fast.vocode(toks)
    finally:
        fast.use_graph = False
    assert got.shape == ref.shape
    assert float((got - ref).abs().max()) <= 1e-4

    greedy = SamplingParams(**{**PARAMS.__dict__, "greedy": True})
    torch.manual_seed(0)
    whole = fast.synthesize("Okay.", greedy, max_new_tokens=10, exaggeration=0.3)
    tm = StreamTimings()
    torch.manual_seed(0)
    chunks = list(
        fast.stream(
            "Okay.",
            greedy,
            max_new_tokens=10,
            exaggeration=0.3,
            first_chunk_tokens=4,
            chunk_tokens=4,
            context_tokens=2,
            poll_tokens=2,
            timings=tm,
        )
    )
    assert len(chunks) >= 3 and tm.first_chunk_s is not None and tm.t3_tokens == 10
    assert sum(len(c) for c in chunks) == len(whole) and len(whole) % SAMPLES_PER_TOKEN == 0
    assert all(np.isfinite(c).all() for c in chunks)


def test_runner_fast_flag_writes_results(tmp_path: Path, ckpt: Path) -> None:
    utts = tmp_path / "u.yaml"
    utts.write_text("utterances:\n  - id: u07\n    text: Okay.\n")
    cfg = runner.RunnerConfig(
        weights=str(ckpt), out=tmp_path / "run", utterances=utts, warmup=0, max_new_tokens=6, fast=True
    )
    run_dir = runner.run(cfg)
    doc = json.loads((run_dir / "results.json").read_text())
    system = doc["systems"][0]
    assert system["config"]["fast"]["enabled"] is True
    row = system["utterances"][0]
    assert row["ok"], row["error"]
    assert row["audio_s"] > 0 and (run_dir / row["wav"]).is_file()


def test_cli_flags(monkeypatch) -> None:
    from ttsbench.commands import bench_chatterbox, serve_chatterbox

    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers()
    serve_chatterbox.register(sub)
    bench_chatterbox.register(sub)
    a = ap.parse_args(["serve-chatterbox", "--reference", "x.wav"])
    assert a.fast == "auto" and a.fast_dtype == "fp32" and a.first_chunk_tokens == 12 and a.chunk_tokens == 50
    assert a.hift == "graph"  # equals eager HiFT under deterministic cuDNN (docs/benchmarks/hift-graph-diff-h100.json)
    assert a.pause_t3_first_chunk == "on" and a.s3_compile == "off" and a.vocoder_preempt == a.vocoder_yield == "on"
    from ttsbench.chatterbox import fast_hift

    hift_opt = next(
        x for x in ap._subparsers._group_actions[0].choices["serve-chatterbox"]._actions if x.dest == "hift"
    )
    assert tuple(hift_opt.choices) == fast_hift.MODES  # the CLI offers exactly the modes FastChatterbox takes
    from ttsbench.errors import UserError

    for bad in (["--chunk-tokens", "0"], ["--first-chunk-tokens", "-1"]):  # refused before any model is loaded
        with pytest.raises(UserError, match="must be positive"):
            serve_chatterbox._run(ap.parse_args(["serve-chatterbox", "--reference", "x.wav", *bad]))
    assert ap.parse_args(["serve-chatterbox", "--reference", "x.wav", "--fast", "off"]).fast == "off"
    from ttsbench.chatterbox import server

    seen: list = []
    monkeypatch.setattr(server, "serve", lambda cfg: seen.append(cfg) or 0)
    opts = ["--hift", "graph", "--pause-t3-first-chunk", "off", "--s3-compile", "on", "--chunk-tokens", "75"]
    opts += ["--vocoder-batching", "off"]  # --s3-compile on needs it (tests/test_chatterbox_server_names.py)
    assert serve_chatterbox._run(ap.parse_args(["serve-chatterbox", "--reference", "x.wav", *opts])) == 0
    cfg = seen[0]
    assert (cfg.hift, cfg.pause_t3_first_chunk, cfg.s3_compile, cfg.chunk_tokens) == ("graph", False, True, 75)
    assert cfg.batch_vocoder is False and cfg.vocoder_preempt is cfg.vocoder_yield is True
    seen.clear()
    off = ["--vocoder-preempt", "off", "--vocoder-yield", "off"]
    assert serve_chatterbox._run(ap.parse_args(["serve-chatterbox", "--reference", "x.wav", *off])) == 0
    assert seen[0].vocoder_preempt is seen[0].vocoder_yield is False and seen[0].batch_vocoder is True
    assert seen[0].vocoder_catch_up is True and seen[0].vocoder_deadlines is False
    assert (seen[0].t3_attn, seen[0].t3_prefill_graphs) == ("fused", False)  # defaults: kernel on, graphs opt-in
    seen.clear()
    t3 = ["--t3-attn", "eager", "--t3-prefill-graphs", "on", "--vocoder-catch-up", "off", "--vocoder-deadlines", "on"]
    assert serve_chatterbox._run(ap.parse_args(["serve-chatterbox", "--reference", "x.wav", *t3])) == 0
    assert (seen[0].t3_attn, seen[0].t3_prefill_graphs, seen[0].vocoder_catch_up) == ("eager", True, False)
    assert seen[0].vocoder_deadlines is True

    with pytest.raises(SystemExit):  # argparse refuses a mode that does not exist
        ap.parse_args(["serve-chatterbox", "--reference", "x.wav", "--hift", "fast"])
    assert ap.parse_args(["bench-chatterbox", "--fast"]).fast is True
    assert ap.parse_args(["bench-chatterbox", "--no-fast"]).fast is False


def test_server_streams_through_the_fast_path(tmp_path: Path) -> None:
    """``serve-chatterbox --fast on --batch-slots 2`` (CPU here: eager, no graphs): /health says so; two
    concurrent streaming requests (one of two sentences, the second decoded ahead) are decoded together
    (batched T3 steps) and both return audio."""
    import threading

    import httpx

    import _chatterbox_env
    from ttsbench.httpserve import free_port
    from ttsbench.wavstream import StreamDecoder

    ref = _chatterbox_env.reference_wav(tmp_path / "voice.wav", 2.0)
    port = free_port()
    argv = _chatterbox_env.serve_argv(
        _chatterbox_env.checkpoint(),
        ref,
        port,
        "--max-new-tokens",
        "8",
        "--fast",
        "on",
        "--first-chunk-tokens",
        "4",
        "--chunk-tokens",
        "3",
        "--batch-slots",
        "2",
        "--fast-max-len",
        "256",
        "--vocoder-preempt",
        "on",
        "--vocoder-yield",
        "on",
    )
    bodies: dict[int, bytes] = {}

    def speak(url: str, i: int) -> None:
        with httpx.stream(
            "POST",
            url + "/v1/audio/speech",
            timeout=600,
            json={"input": ["One.", "Two. More words."][i], "response_format": "wav", "stream": True},
        ) as r:
            assert r.status_code == 200
            bodies[i] = b"".join(r.iter_raw())

    with _chatterbox_env.serve_chatterbox(argv, port, tmp_path / "server.log") as url:
        health = httpx.get(url + "/health", timeout=10).json()
        assert health["fast"]["enabled"] is True and health["fast"]["mode"] == "on"
        assert health["fast"]["first_chunk_tokens"] == 4 and health["fast"]["chunk_tokens"] == 3
        assert health["fast"]["batching"]["slots"] == 2
        threads = [threading.Thread(target=speak, args=(url, i)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(600)
        after = httpx.get(url + "/health", timeout=10).json()["fast"]
        sched, voc = after["scheduler"], after["vocoder"]
    assert sched["error"] is None and sched["steps"] > 0
    # both streams registered for their first chunk and released it (no request left counted as decoding)
    assert voc["preempt"] is True and voc["yield_t3"] is True and voc["expecting"] == 0, voc
    assert sum(voc["batches"].values()) == len(voc["trace"]) >= 3
    assert "2" in sched["width_steps"], sched  # the two requests shared decode steps
    for i in range(2):
        dec = StreamDecoder("wav")
        dec.feed(bodies[i])
        x = dec.finish()
        assert x.size > 0 and x.size % SAMPLES_PER_TOKEN == 0 and float(np.abs(x).max()) > 0


def test_sync_free_chunk_mask_and_encoder_wrapper(model, fast: FastChatterbox) -> None:
    from chatterbox.models.s3gen.transformer import upsample_encoder
    from chatterbox.models.s3gen.utils.mask import add_optional_chunk_mask

    from ttsbench.chatterbox.fast_s3 import sync_free_chunk_mask

    masks = torch.tensor([[[True, True, False, False]], [[True, True, True, True]]])
    xs = torch.zeros(2, 4, 8)
    want = add_optional_chunk_mask(xs, masks.clone(), False, False, 0, 0, -1)
    with sync_free_chunk_mask():
        got = upsample_encoder.add_optional_chunk_mask(xs, masks.clone(), False, False, 0, 0, -1)
        # an all-False row becomes all True, as upstream intends (upstream itself raises NameError there:
        # chatterbox 0.1.7's mask.py calls logging.warning without importing logging)
        empty = upsample_encoder.add_optional_chunk_mask(
            xs, torch.zeros(2, 1, 4, dtype=torch.bool), False, False, 0, 0, -1
        )
    assert torch.equal(got, want) and upsample_encoder.add_optional_chunk_mask is add_optional_chunk_mask
    assert bool(empty.all())

    # the graphed encoder is installed only for the call and gives the eager encoder's output (CPU: eager path)
    enc = model.s3gen.flow.encoder
    tok = torch.randn(1, 30, 512)  # S3Gen: token embeddings of size 512 into the encoder
    lens = torch.tensor([30])
    ref_h, ref_m = enc(tok, lens)
    calls = fast.s3graphs.encoder.replays, fast.s3graphs.encoder.error
    with fast.s3graphs.installed():
        assert "forward" in enc.__dict__
        h, m = enc(tok, lens)
    assert "forward" not in enc.__dict__
    assert torch.equal(h, ref_h) and torch.equal(m, ref_m)
    assert (fast.s3graphs.encoder.replays, fast.s3graphs.encoder.error) == calls  # no graphs on CPU


def _collect(sched, t3_cond, tt, n: int, params: SamplingParams, out: dict, key: str, started=None) -> None:
    parts = []
    for part in sched.tokens(t3_cond, tt, n, params):
        parts.append(part)
        if started is not None:
            started.set()
    out[key] = torch.cat(parts).tolist() if parts else []


def test_prefill_graphs_replay_by_padded_length_and_a_failed_capture_keeps_the_rest(model, fast, monkeypatch) -> None:
    """``BatchT3(prefill_graphs=True)``: a prefix is prefilled by the graph of its slot and padded length, with the
    logits of the unpadded eager prefill; a failed capture stops capturing, says why, keeps the graphs captured and
    leaves other lengths eager. CUDA graphs cannot run here: stand-in graphs (named so) replay the captured function."""
    from ttsbench.chatterbox import fast_batch
    from ttsbench.chatterbox.fast_batch import BatchT3

    class StandInGraph:  # stand-in for torch.cuda.CUDAGraph: replay() runs what was captured
        def __init__(self, fn) -> None:
            self.fn, self.replays = fn, 0

        def replay(self) -> None:
            self.replays += 1
            self.fn()

    tt = fast.text_tokens("Okay.")
    plain = BatchT3(fast.t3, slots=2)
    L = plain.admit(1, model.conds.t3, tt, PARAMS)
    Lp = -(-L // fast_batch.PREFILL_PAD) * fast_batch.PREFILL_PAD
    batch = BatchT3(fast.t3, slots=2, prefill_graphs=True)
    batch.cuda_graph = True  # as on CUDA, for the prefill graphs only (no decode step runs here)

    per_slot = batch.prefill_max // fast_batch.PREFILL_PAD
    kept = per_slot + Lp // fast_batch.PREFILL_PAD - 1  # all of slot 0, slot 1 up to Lp - PREFILL_PAD

    def capture(fn, stream=None):
        if len(batch._graphs) == kept:
            raise RuntimeError("stand-in capture failure")
        return StandInGraph(fn)

    monkeypatch.setattr(batch, "_capture", capture)
    assert Lp < batch.prefill_max
    assert batch.capture_prefill() == len(batch._graphs) == kept
    assert batch.prefill_graph_error == "RuntimeError: stand-in capture failure"
    assert batch.capture_prefill() == 0  # no retry after a failure
    assert batch.admit(0, model.conds.t3, tt, PARAMS) == L
    assert batch._graphs[("prefill", 0, Lp)].replays == 1
    torch.testing.assert_close(batch.logits[0:2], plain.logits[2:4], rtol=1e-5, atol=1e-5)
    batch.admit(1, model.conds.t3, tt, PARAMS)  # slot 1 has no graph at Lp: eager, same padded prefill
    assert ("prefill", 1, Lp) not in batch._graphs and batch._graphs[("prefill", 0, Lp)].replays == 1
    torch.testing.assert_close(batch.logits[2:4], plain.logits[2:4], rtol=1e-5, atol=1e-5)
    for mine, ref in ((batch.k_cache, plain.k_cache), (batch.v_cache, plain.v_cache)):  # each slot its own rows
        torch.testing.assert_close(mine[:, 0:2, :, :L], ref[:, 2:4, :, :L], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(mine[:, 2:4, :, :L], ref[:, 2:4, :, :L], rtol=1e-5, atol=1e-5)


def test_batched_decode_equals_per_request_decode(model, fast: FastChatterbox) -> None:
    """Three requests decoded together (one joins mid-flight, one samples while two decode greedily, different
    caps, a per-request stop) give each greedy request the tokens it gets when decoded alone."""
    import threading
    import time

    from ttsbench.chatterbox.fast_batch import BatchT3, T3Scheduler

    greedy = SamplingParams(**{**PARAMS.__dict__, "greedy": True})
    conds = model.conds.t3
    texts = {"a": ("Okay.", 5), "b": ("Sure, I can help with that.", 6), "c": ("One two three.", 4)}
    tts = {k: fast.text_tokens(t) for k, (t, _) in texts.items()}
    # make the token request b draws at step 3 the stop token: b must end there, on its own
    stop = fast.t3.generate(conds, tts["b"], 3, greedy).view(-1).tolist()[2]
    saved_stop = fast.t3.stop_token
    fast.t3.stop_token = stop
    try:
        ref_stop = {k: fast.t3.generate(conds, tts[k], n, greedy).view(-1).tolist() for k, (_, n) in texts.items()}
        assert len(ref_stop["b"]) == ref_stop["b"].index(stop) + 1 <= 3
        sched = T3Scheduler(BatchT3(fast.t3, slots=3), poll=2)
        try:
            got: dict = {}
            a_started = threading.Event()
            ta = threading.Thread(target=_collect, args=(sched, conds, tts["a"], 5, greedy, got, "a", a_started))
            tb = threading.Thread(target=_collect, args=(sched, conds, tts["b"], 6, greedy, got, "b"))
            ts = threading.Thread(target=_collect, args=(sched, conds, tts["c"], 4, PARAMS, got, "sampled"))
            ta.start()
            assert a_started.wait(120)  # b and the sampled request join while a is decoding
            tb.start()
            ts.start()
            for t in (ta, tb, ts):
                t.join(300)
            got_c: dict = {}
            _collect(sched, conds, tts["c"], 4, greedy, got_c, "c")  # alone, after the others left
            # a caller that stops listening (client gone) frees its slot at the next poll, not at its cap
            before = sched.steps
            it = sched.tokens(conds, tts["c"], 60, greedy)
            next(it)
            it.close()
            for _ in range(600):
                if not sched._busy:
                    break
                time.sleep(0.1)
            assert not sched._busy and sched.steps - before <= 6, sched.steps - before
        finally:
            sched.close()
        assert sched.error is None
        assert max(sched.width_steps) >= 2, sched.width_steps  # requests really shared steps
        assert got["a"] == ref_stop["a"] and got["b"] == ref_stop["b"] and got_c["c"] == ref_stop["c"]
        assert 0 < len(got["sampled"]) <= 4
    finally:
        fast.t3.stop_token = saved_stop


def test_vocoder_lock_lets_first_chunks_go_first() -> None:
    """While the vocoder is busy, a first chunk that arrives after two later chunks is served before them."""
    import threading
    import time

    from ttsbench.chatterbox.fast import VocoderLock

    lock, order = VocoderLock(), []
    busy, release = threading.Event(), threading.Event()

    def holder() -> None:
        with lock:
            busy.set()
            release.wait(10)
            order.append("holder")

    def waiter(name: str, urgent: bool) -> None:
        with lock.urgent() if urgent else lock:
            order.append(name)

    threads = [threading.Thread(target=holder)]
    threads[0].start()
    assert busy.wait(10)
    for name, urgent in (("later1", False), ("later2", False), ("first", True)):
        t = threading.Thread(target=waiter, args=(name, urgent))
        t.start()
        threads.append(t)
        time.sleep(0.05)  # each waiter is queued before the next one starts
    release.set()
    for t in threads:
        t.join(10)
    assert order[:2] == ["holder", "first"] and sorted(order[2:]) == ["later1", "later2"], order


def test_vocoder_thread_batches_due_chunks(model, fast: FastChatterbox, monkeypatch) -> None:
    """Chunks that wait together are vocoded together when they have the same length (a first chunk before
    later chunks), or when a shorter one reaches a captured batch length with more of its sentence as left
    context (that context's audio dropped); with the noise draws fixed, each row of a batch equals its chunk
    vocoded alone — the extended one equal to vocoding it with that context alone."""
    import threading

    from ttsbench.chatterbox.fast_vocoder import VocodeBatcher

    # CFM starting noise and HiFT's phase/noise fixed: the only remaining difference is the batch itself
    monkeypatch.setattr(torch, "randn_like", lambda x, **k: torch.zeros_like(x))
    monkeypatch.setattr(torch.distributions.Uniform, "sample", lambda self, sample_shape=(): torch.zeros(sample_shape))
    g = torch.Generator().manual_seed(1)
    sizes = (("a", 10), ("b", 10), ("c", 6), ("d", 3), ("e", 7), ("f", 8))
    toks = {k: torch.randint(0, 6561, (n,), generator=g) for k, n in sizes}
    prefix = {"e": torch.randint(0, 6561, (5,), generator=g), "f": torch.randint(0, 6561, (1,), generator=g)}
    alone = {k: fast.vocode(t).squeeze(0).float().numpy() for k, t in toks.items()}
    # e reaches 10 with 3 tokens of its prefix; f (1 token of prefix) cannot, and is vocoded at its own length
    extended = fast.vocode(torch.cat([prefix["e"][-3:], toks["e"]])).squeeze(0).float().numpy()
    alone["e"] = extended[3 * SAMPLES_PER_TOKEN :]
    vb = VocodeBatcher(fast, max_batch=4, lengths=(10,))
    got: dict = {}
    order: list[str] = []

    def submit(k: str, urgent: bool) -> None:
        got[k] = vb.vocode(toks[k], urgent=urgent, prefix=prefix.get(k))
        order.append(k)

    try:
        threads = {k: threading.Thread(target=submit, args=(k, k == "c")) for k in toks}
        with fast.s3_lock:  # the vocoder thread takes d and waits for the lock; the others queue behind it
            threads["d"].start()
            for _ in range(400):  # d submitted and taken
                if vb._seq == 1 and not vb._jobs:
                    break
                threading.Event().wait(0.05)
            for k in ("f", "e", "a", "b", "c"):
                threads[k].start()
                for _ in range(200):  # in this order: f and e are the oldest of the later chunks
                    if any(x.tokens is toks[k] for x in vb._jobs):
                        break
                    threading.Event().wait(0.01)
            assert len(vb._jobs) == 5
        for t in threads.values():
            t.join(300)
    finally:
        vb.close()
    # d; c alone (urgent, another length); f, the oldest, alone (it cannot reach 10); then e + a + b at 10
    assert vb.batches == {1: 3, 3: 1}, (vb.batches, order)
    assert vb.extended == 1
    assert order[:3] == ["d", "c", "f"] and set(order[3:]) == {"a", "b", "e"}, order
    for k in toks:
        assert got[k].shape == alone[k].shape == (len(toks[k]) * SAMPLES_PER_TOKEN,)
        np.testing.assert_allclose(got[k], alone[k], atol=1e-4)


def _preempt_run(preempt: bool, fast, euler) -> tuple[list[str], dict, object]:
    """A later chunk S is being vocoded when a first chunk U arrives (queued as S's vocoding starts, before its
    first CFM step, so the timing is fixed): the order the two finished in, their audio, and the batcher."""
    import threading

    from ttsbench.chatterbox.fast_vocoder import VocodeBatcher

    vb = VocodeBatcher(fast, max_batch=4, lengths=(6,), preempt=preempt)
    toks = {"S": torch.arange(6) + 100, "U": torch.arange(6) + 7}
    got: dict = {}
    order: list[str] = []

    def submit(k: str) -> None:
        got[k] = vb.vocode(toks[k], urgent=k == "U")
        order.append(k)

    u = threading.Thread(target=submit, args=("U",))
    real = fast.vocode

    def vocode(t):  # S's call has begun: U arrives now (U's own, nested or later, call passes through)
        if u.ident is None:  # not started yet
            u.start()
            for _ in range(500):
                if any(j.urgent for j in vb._jobs):
                    break
                threading.Event().wait(0.01)
        return real(t)

    euler.between = None
    fast.vocode = vocode
    try:
        s = threading.Thread(target=submit, args=("S",))
        s.start()
        s.join(300)
        u.join(300)
    finally:
        vb.close()
        fast.__dict__.pop("vocode", None)
    return order, got, vb


def _toy_fast(monkeypatch):
    """The batcher's view of FastChatterbox on the CPU: (B, n) tokens through a real GraphEuler whose "graphs" are a
    stand-in replaying the captured step on its static buffers, as a CUDA graph does (one shape: one shared entry)."""
    from types import SimpleNamespace

    from ttsbench.chatterbox import fast_s3
    from ttsbench.chatterbox.fast import GraphEuler, VocoderLock

    monkeypatch.setattr(fast_s3, "graphable", lambda t: True)
    monkeypatch.setattr(GraphEuler, "_capture", staticmethod(lambda step: SimpleNamespace(replay=step)))

    def forward(x, mask, mu, t, spks, cond, r):  # depends on the state and on every per-call input
        return torch.tanh(x + mu * (1 + t[:, None, None]) + spks[:, :, None] + cond) * mask

    est = SimpleNamespace(dtype=torch.float32, forward=forward)
    euler = GraphEuler(SimpleNamespace(estimator=est, inference_cfg_rate=0.7))
    t_span = torch.linspace(0, 1, 6)

    class Fast:
        device = torch.device("cpu")
        s3_stream = None
        scheduler = None
        pause_t3_first_chunk = False

        def __init__(self) -> None:
            self.s3_lock = VocoderLock()
            self.euler = euler

        def vocode(self, toks: torch.Tensor) -> torch.Tensor:
            B, n = toks.shape
            mu = torch.sin(toks.float())[:, None, :].expand(B, 80, n).contiguous()
            spks, cond = torch.cos(toks.float()[:, :1]).expand(B, 80), mu * 0.5
            out = euler(torch.zeros(B, 80, n), t_span, mu, torch.ones(B, 1, n), spks, cond)
            return out[:, :, :, None].expand(B, 80, n, 20).reshape(B, -1)  # any (B, samples)

    return Fast(), euler


def test_vocoder_preemption_vocodes_a_first_chunk_between_cfm_steps_and_keeps_the_batch(monkeypatch) -> None:
    """--vocoder-preempt: a first chunk that arrives while a later chunk's CFM runs is vocoded between two of its
    Euler steps and finishes first; the later chunk's result is unchanged although the first chunk replayed the
    same shape's step graph on the same static buffers (the entry is snapshotted and restored). Without
    preemption the first chunk waits for the whole call. Each call is traced with its waits."""
    fast, euler = _toy_fast(monkeypatch)
    alone = {k: fast.vocode(t[None])[0].numpy() for k, t in (("S", torch.arange(6) + 100), ("U", torch.arange(6) + 7))}
    assert euler.captures == 1 and len(euler._cache) == 1  # one shape: S and U share the entry and its graph
    assert not np.allclose(alone["S"], alone["U"])

    order, got, vb = _preempt_run(True, fast, euler)
    assert order == ["U", "S"] and vb.preemptions == 1
    for k in ("S", "U"):
        np.testing.assert_array_equal(got[k], alone[k])  # same steps on the same numbers: exactly equal
    st = vb.state()
    outer, nested = sorted(st["trace"], key=lambda c: c["nested"])
    assert (outer["first"], nested["first"], nested["nested"], outer["nested"]) == (0, 1, True, False)
    assert nested["t_ms"] >= outer["t_ms"] and nested["ms"] <= outer["ms"]
    assert st["wait_ms"]["first"]["n"] == 1 and st["wait_ms"]["later"]["n"] == 1 and st["preempt"] is True

    order, got, vb = _preempt_run(False, fast, euler)
    assert order == ["S", "U"] and vb.preemptions == 0
    for k in ("S", "U"):
        np.testing.assert_array_equal(got[k], alone[k])
    first = vb.state()["wait_ms"]["first"]
    assert first["n"] == 1 and first["p50"] >= 0


def test_vocoder_yield_holds_later_chunks_while_a_request_decodes_its_first_tokens(monkeypatch) -> None:
    """--vocoder-yield: while a request is registered as decoding toward its first chunk, a waiting later chunk
    does not start, and one in progress pauses between CFM steps; the first chunk, once submitted, goes first.
    A request still waiting for a T3 slot does not count, and a hold never outlasts YIELD_MAX_S."""
    import threading
    import time
    from types import SimpleNamespace

    from ttsbench.chatterbox import fast_vocoder
    from ttsbench.chatterbox.fast_vocoder import VocodeBatcher

    fast, _ = _toy_fast(monkeypatch)
    monkeypatch.setattr(fast_vocoder, "YIELD_MAX_S", 2.0)  # parts 1 and 2 end their holds themselves
    S, U = torch.arange(6) + 100, torch.arange(5) + 7  # U cannot join S's batch (no captured length for it)
    alone = fast.vocode(S[None])[0].numpy()

    def later(vb, got, order) -> threading.Thread:
        def run() -> None:
            got["S"] = vb.vocode(S)
            order.append("S")

        t = threading.Thread(target=run)
        t.start()
        return t

    # 1. held before it starts: S waits while a request decodes; U (its first chunk) then goes first
    vb = VocodeBatcher(fast, max_batch=4, lengths=(6,), yield_t3=True)
    got: dict = {}
    order: list[str] = []
    try:
        first_in = vb.expect_first()
        t = later(vb, got, order)
        time.sleep(0.15)
        assert not vb._trace and vb.state()["expecting"] == 1  # S not started
        got["U"] = vb.vocode(U, urgent=True, first_in=first_in)  # as stream() submits its first chunk
        first_in()  # idempotent
        t.join(60)
    finally:
        vb.close()
    assert [c["first"] for c in vb.state()["trace"]] == [1, 0] and vb.yields == 1 and vb.yield_s >= 0.1
    u_call, s_call = vb.state()["trace"]
    assert u_call["decode_ms"][0] >= 150 and s_call["decode_ms"] == [None]  # U's request decoded since expect_first
    np.testing.assert_array_equal(got["S"], alone)
    assert vb.state()["expecting"] == 0

    # 2. paused mid-call: a request registers during S's first step; S goes on once the first chunk is in
    vb = VocodeBatcher(fast, max_batch=4, lengths=(6,), yield_t3=True)
    got, order = {}, []
    original, done = vb._between, []

    def between(entry) -> None:
        if not done:
            done.append(vb.expect_first())
            threading.Timer(0.2, done[0]).start()  # the first chunk is in 0.2 s later
        original(entry)

    vb._between = between
    try:
        later(vb, got, order).join(60)
    finally:
        vb.close()
    assert vb.yields == 1 and 0.15 <= vb.yield_s < 1.5, vb.yield_s  # ended by the first chunk, not the cap
    np.testing.assert_array_equal(got["S"], alone)

    # 3. bounded, and a request still queued for a T3 slot does not hold anything
    monkeypatch.setattr(fast_vocoder, "YIELD_MAX_S", 0.5)
    fast.scheduler = SimpleNamespace(queued=lambda: 1, paused=None)
    vb = VocodeBatcher(fast, max_batch=4, lengths=(6,), yield_t3=True)
    got, order = {}, []
    try:
        vb.expect_first()  # never released: it waits for a slot
        later(vb, got, order).join(60)
        assert vb.yields == 0
        fast.scheduler = None  # now it decodes: the next later chunk waits, but only YIELD_MAX_S in all
        t0 = time.perf_counter()
        later(vb, got, order).join(60)
        # held before it started and between its 4 steps, 0.5 s in all (a budget per wait would be 2.5 s)
        assert time.perf_counter() - t0 >= 0.45 and vb.yields >= 1 and 0.49 <= vb.yield_s < 1.0, vb.yield_s
    finally:
        vb.close()
        fast.scheduler = None


def test_vocoder_preemption_through_the_real_s3gen(model, fast: FastChatterbox, monkeypatch) -> None:
    """The same preemption through chatterbox's own S3Gen (flow encoder wrapper, CFM through GraphEuler, HiFT):
    with the noise draws fixed, both chunks equal their audio vocoded alone, and the graphed parts' nested
    installation leaves the outer one in place (S3Graphs, GraphedHift)."""
    import copy

    from ttsbench.chatterbox import fast_hift

    monkeypatch.setattr(torch, "randn_like", lambda x, **k: torch.zeros_like(x))
    monkeypatch.setattr(torch.distributions.Uniform, "sample", lambda self, sample_shape=(): torch.zeros(sample_shape))
    fast.use_graph = True  # route through GraphEuler (its graphs themselves only on CUDA)
    try:
        alone = {
            k: fast.vocode(t).squeeze(0).float().numpy()
            for k, t in (("S", torch.arange(6) + 100), ("U", torch.arange(6) + 7))
        }
        order, got, vb = _preempt_run(True, fast, fast.euler)
    finally:
        fast.use_graph = False
    assert order == ["U", "S"] and vb.preemptions == 1
    for k in ("S", "U"):
        np.testing.assert_allclose(got[k], alone[k], atol=1e-5)
    enc = model.s3gen.flow.encoder
    with fast.s3graphs.installed():
        with fast.s3graphs.installed():
            pass
        assert enc.__dict__.get("forward") is fast.s3graphs.encoder
    assert "forward" not in enc.__dict__
    hift = copy.deepcopy(model.s3gen.mel2wav)  # GraphedHift patches its HiFT: not the shared model's
    g = fast_hift.GraphedHift(hift, torch.device("cpu"))
    with g.installed():
        with g.installed():
            pass
        assert hift.__dict__.get("inference") == g.inference
    assert "inference" not in hift.__dict__


def test_vocoder_deadlines_order_later_chunks_and_yield_only_with_slack(monkeypatch) -> None:
    """--vocoder-deadlines: later chunks are taken earliest playback deadline first (first chunks still first);
    a batch of later chunks yields to a request decoding its first tokens only while its listener keeps more than
    DEADLINE_SLACK_S of audio, and the trace records each row's slack. Without deadlines: oldest first."""
    import threading
    import time
    from types import SimpleNamespace

    from ttsbench.chatterbox import fast_vocoder
    from ttsbench.chatterbox.fast_vocoder import VocodeBatcher, _Job

    now = time.perf_counter()
    for deadlines, want in ((True, [2, 1, 0]), (False, [2, 0, 1])):
        vb = VocodeBatcher(SimpleNamespace(s3_stream=None), max_batch=4, lengths=(12, 58), deadlines=deadlines)
        try:
            jobs = [
                _Job(torch.zeros(20, dtype=torch.long), False, 0, deadline=now + 5.0),  # oldest, most slack
                _Job(torch.zeros(29, dtype=torch.long), False, 1, deadline=now + 0.1),  # its listener runs out first
                _Job(torch.zeros(12, dtype=torch.long), True, 2),  # a first chunk
            ]
            taken = []
            with vb._cv:
                vb._jobs = list(jobs)
                while vb._jobs:
                    group, _ = vb._take()
                    taken += [j.seq for j in group]
        finally:
            vb.close()
        assert taken == want, (deadlines, taken)

    fast, _ = _toy_fast(monkeypatch)
    monkeypatch.setattr(fast_vocoder, "YIELD_MAX_S", 1.0)
    S = torch.arange(6) + 100
    for slack_s, held in ((0.2, False), (5.0, True)):
        vb = VocodeBatcher(fast, max_batch=4, lengths=(6,), yield_t3=True, deadlines=True)
        try:
            release = vb.expect_first()  # a request decodes toward its first chunk the whole time
            threading.Timer(0.6, release).start()
            t0 = time.perf_counter()
            vb.vocode(S, deadline=t0 + slack_s)
            waited = time.perf_counter() - t0
        finally:
            vb.close()
        state = vb.state()
        if held:  # plenty of audio left: it yielded until the first chunk's request was done (0.6 s)
            assert state["yields"] >= 1 and waited >= 0.5 and state["slack_refusals"] == 0, (waited, state)
        else:  # 0.2 s of audio left: no yield, vocoded at once
            assert state["yields"] == 0 and state["slack_refusals"] >= 1 and waited < 0.5, (waited, state)
            assert state["trace"][0]["slack_ms"][0] <= 200
        assert state["deadlines"] is True


def test_vocoder_takes_the_head_and_the_largest_batch_of_a_captured_length() -> None:
    """The batcher's choice over random queues (no model: the choice only): the head (a first chunk before
    later ones, then the oldest) is always taken; every row reaches the batch's length, with its own tokens or
    with prefix; a batch of two or more is at a captured length; no candidate length would take more jobs; the
    jobs left keep their order; a stream's chunk chained after another (``after``) never goes first."""
    import random
    from types import SimpleNamespace

    from ttsbench.chatterbox.fast_vocoder import VocodeBatcher, _Job

    rng = random.Random(0)
    lengths, cap = (12, 58), 4
    vb = VocodeBatcher(SimpleNamespace(s3_stream=None), max_batch=cap, lengths=lengths)  # its thread waits
    sizes = {1: 0, 2: 0, 3: 0, 4: 0}
    try:
        for _ in range(400):
            jobs = []
            for seq in range(rng.randint(1, 7)):
                n = rng.choice((12, 12, 58, 58, 20, 29, 48, 5))
                pre = 0 if n == 12 and rng.random() < 0.5 else rng.choice((0, 8, 30, 60))
                prefix = torch.zeros(pre, dtype=torch.long) if pre else None
                jobs.append(_Job(torch.zeros(n, dtype=torch.long), urgent=pre == 0 and n == 12, seq=seq, prefix=prefix))
            chained = rng.random() < 0.5  # some later chunks follow an earlier one of the same stream
            if chained:
                for j in jobs[1:]:
                    earlier = [e for e in jobs if e.seq < j.seq and not e.urgent]
                    if not j.urgent and earlier and rng.random() < 0.5:
                        j.after = rng.choice(earlier)
            with vb._cv:  # the vocoder thread stays asleep: the queue is only looked at here
                vb._jobs = list(jobs)
                group, n = vb._take()
                left = list(vb._jobs)
                vb._jobs = []
            head = min((j for j in jobs if j.after is None), key=lambda j: (not j.urgent, j.seq))
            assert group[0] is head and 1 <= len(group) <= cap
            for i, j in enumerate(group):  # never a chunk before the one ahead of it in its stream
                assert j.after is None or any(g is j.after for g in group[:i]), (i, j.seq, j.after.seq)
            assert all(j.fits(n) and len(j.row(n)) == n for j in group)
            assert len(group) == 1 or n in lengths
            candidates = [m for m in (len(head.tokens), *lengths) if m >= len(head.tokens) and head.fits(m)]
            for m in candidates:
                if m in lengths and not chained:
                    assert len(group) >= min(cap, sum(j.fits(m) for j in jobs)), (m, n, len(group))
            assert left == [j for j in jobs if all(j is not g for g in group)]
            sizes[len(group)] += 1
    finally:
        vb.close()
    assert all(sizes.values()), sizes  # the draws made batches of every size


def test_sync_free_hift_sine_source_equals_upstream() -> None:
    """fast_hift's SineGen forward (device-side buffer, pinned non-blocking phase copy on CUDA) gives upstream's
    numbers for the same seed: voiced, unvoiced and gliding f0, batch of 2; install() swaps only what it names."""
    from types import SimpleNamespace

    from chatterbox.models.s3gen.hifigan import SineGen

    from ttsbench.chatterbox import fast_hift

    gen = SineGen(24000, harmonic_num=8, sine_amp=0.1, noise_std=0.003, voiced_threshold=10)
    f0 = torch.cat(
        [torch.zeros(2, 1, 240), torch.full((2, 1, 480), 180.0), torch.linspace(60, 260, 960).expand(2, 1, -1)], -1
    )
    torch.manual_seed(3)
    upstream = SineGen.forward(gen, f0)
    torch.manual_seed(3)
    ours = fast_hift.sine_forward(gen, f0)
    for a, b in zip(upstream, ours, strict=True):
        assert a.shape == b.shape and torch.equal(a, b)
    assert float(upstream[1].min()) == 0.0 and float(upstream[1].max()) == 1.0  # both voiced and unvoiced parts

    hift = SimpleNamespace(stft_window=torch.hann_window(16), m_source=SimpleNamespace(l_sin_gen=gen))
    assert fast_hift.install(hift, torch.device("cpu")) == {"sine": True, "window": False}
    torch.manual_seed(5)
    swapped = gen(f0)  # nn.Module.__call__ -> the instance's forward
    torch.manual_seed(5)
    assert torch.equal(swapped[0], SineGen.forward(gen, f0)[0])
    assert "forward" in vars(gen) and "forward" not in vars(SineGen(24000))  # the instance, not the class


def test_sync_free_hift_whole_vocoder_equals_upstream(model) -> None:
    """install() on a copy of the checkpoint's real HiFTGenerator finds the sine source and window where
    chatterbox 0.1.7 keeps them, and the whole vocoder gives upstream's samples for the same mel and seed."""
    import copy

    from ttsbench.chatterbox import fast_hift

    upstream = model.s3gen.mel2wav
    ours = copy.deepcopy(upstream)
    assert fast_hift.install(ours, torch.device("cpu")) == {"sine": True, "window": False}
    assert "forward" in vars(ours.m_source.l_sin_gen) and "forward" not in vars(upstream.m_source.l_sin_gen)
    mel = torch.randn(1, 80, 60, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(7)
    a = upstream.inference(speech_feat=mel)[0]
    torch.manual_seed(7)
    b = ours.inference(speech_feat=mel)[0]
    assert a.numel() > 0 and torch.equal(a, b)


def test_graphed_hift_split_equals_upstream(model) -> None:
    """GraphedHift's split of the real HiFTGenerator (phase drawn before the front, front up to the iSTFT's
    input, eager iSTFT + clamp) gives upstream's samples and source for the same mel and seed, batch 1 and 2;
    installed() swaps inference on the instance only and puts it back; S3Graphs reports, widens and freezes it."""
    import copy

    from ttsbench.chatterbox import fast_hift
    from ttsbench.chatterbox.fast_s3 import S3Graphs

    upstream = model.s3gen.mel2wav
    ours = copy.deepcopy(upstream)
    g = fast_hift.GraphedHift(ours, torch.device("cpu"))
    assert g.sync_free == {"sine": True, "window": False}
    for batch, frames in ((1, 24), (2, 60)):
        mel = torch.randn(batch, 80, frames, generator=torch.Generator().manual_seed(frames))
        torch.manual_seed(11)
        wav_a, src_a = upstream.inference(speech_feat=mel)
        torch.manual_seed(11)
        wav_b, src_b = g.inference(mel)
        assert wav_a.shape == wav_b.shape == (batch, frames * 480) and torch.equal(wav_a, wav_b)
        assert torch.equal(src_a, src_b)
    assert "_istft" not in vars(ours) and "_ttsbench_phase" not in vars(ours.m_source.l_sin_gen)
    with g.installed():
        assert ours.inference == g.inference and "inference" not in vars(upstream)
    assert "inference" not in vars(ours)
    cache = torch.randn(1, 1, 480)  # the cached-source path is upstream's own
    torch.manual_seed(2)
    a = upstream.inference(speech_feat=mel[:1], cache_source=cache)[0]
    torch.manual_seed(2)
    assert torch.equal(a, g.inference(mel[:1], cache)[0])

    s3 = S3Graphs(model.s3gen, hift=g)
    s3.widen(12)  # widening never narrows: the encoder keeps its 24, HiFT goes from 6 to 12
    assert (s3.encoder.max_cached, g.call.max_cached) == (24, 12)
    s3.widen(30)
    assert s3.encoder.max_cached == g.call.max_cached == 30
    s3.freeze()
    assert s3.encoder.frozen and g.call.frozen and s3.error is None
    assert set(s3.state()) == {"encoder", "hift"}
    with pytest.raises(ValueError, match="upstream, sync-free, graph"):
        FastChatterbox(model, max_len=64, hift="fast")


def test_compiled_estimator_is_checked_against_eager(monkeypatch) -> None:
    """--s3-compile's gate: the compiled estimator is kept only when the flow's mel stays within max_rel_rms of
    the eager one; a larger difference, NaN or a compile error puts the eager estimator back and says why.
    (torch.compile is replaced by stand-ins here: inductor on the CPU would take minutes; the GPU run is
    benchmarks/chatterbox_http.py --hift --probe-compile.)"""
    from types import SimpleNamespace

    from ttsbench.chatterbox.fast_s3 import CompiledEstimator

    eager = torch.nn.Linear(4, 4)
    x = torch.randn(3, 4)

    def run(noise: float | None, exc: Exception | None = None) -> tuple[CompiledEstimator, bool]:
        cfm = SimpleNamespace(estimator=eager)

        def fake_compile(mod: torch.nn.Module, dynamic: bool) -> object:
            assert mod is eager and dynamic is True
            if exc is not None:
                raise exc
            return lambda t: mod(t) + noise

        monkeypatch.setattr(torch, "compile", fake_compile)
        ce = CompiledEstimator(cfm, max_rel_rms=1e-3)
        state = torch.get_rng_state()
        # like chatterbox's CFM, the flow starts from fresh noise on every call: the check must compare like
        # with like (same draws), not two noise samples
        ok = ce.check(lambda: cfm.estimator(x + torch.randn_like(x)))
        assert torch.equal(torch.get_rng_state(), state)  # the caller's generator is left as it was
        assert (cfm.estimator is eager) is not ok
        return ce, ok

    ce, ok = run(1e-6)
    assert ok and ce.active and ce.error is None and 0 < ce.rel_rms < 1e-3 and ce.max_abs > 0
    bad = ((0.5, None, "rel rms"), (float("nan"), None, "rel rms nan"), (0.0, RuntimeError("no"), "no"))
    for noise, exc, why in bad:
        ce, ok = run(noise, exc)
        assert not ok and not ce.active and why in ce.error, ce.error
        assert ce.state()["active"] is False


class _ScriptedTokens:
    """A stand-in for the scheduler's TokenStream (its interface, over a script): ``next()`` gives the parts of
    ``nexts`` one by one; ``ready()`` (when given) gives the ``later`` parts at once, as decoded while the
    stream's last chunk was vocoded, then the end. Without ``ready`` it is a plain iterator over the same parts."""

    def __init__(self, nexts: list, later: list, with_ready: bool) -> None:
        self._it = iter(nexts + ([] if with_ready else later))
        self._later = later
        self.exhausted = False
        if with_ready:
            self.ready = self._ready

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._it)

    def _ready(self) -> list:
        got, self._later = self._later, []
        self._it = iter(())
        self.exhausted = True
        return got

    def close(self) -> None:
        pass


def test_a_stream_that_fell_behind_catches_up_in_one_vocoder_call(model, fast: FastChatterbox, monkeypatch) -> None:
    """When T3 ran ahead while a chunk was vocoded, the chunks due by then (the last, shorter one too once the
    tokens are done) go to the batching vocoder at once and share one call; posts run in stream order, so the
    audio (seams, watermark) equals the same stream vocoded chunk by chunk, up to the last chunk: the catch-up
    vocodes it with more left context (to join the steady chunks' length), by design. Noise draws fixed."""
    from ttsbench.chatterbox.fast_vocoder import VocodeBatcher

    monkeypatch.setattr(torch, "randn_like", lambda x, **k: torch.zeros_like(x))
    monkeypatch.setattr(torch.distributions.Uniform, "sample", lambda self, sample_shape=(): torch.zeros(sample_shape))
    g = torch.Generator().manual_seed(3)
    parts = [torch.randint(0, 6561, (n,), generator=g) for n in (5, 6, 6, 6, 3)]
    runs = {}
    for with_ready in (True, False):
        vb = VocodeBatcher(fast, max_batch=4, lengths=(4, 8))
        fast.vocoder = vb
        done_at: list[int] = []
        try:
            script = _ScriptedTokens(parts[:2], parts[2:], with_ready)
            chunks = list(
                fast.stream(
                    "catch up",
                    PARAMS,
                    max_new_tokens=64,
                    first_chunk_tokens=4,
                    chunk_tokens=6,
                    context_tokens=2,
                    tokens=lambda *_, s=script: s,
                    on_tokens_done=lambda d=done_at, v=vb: d.append(sum(v.batches.values())),
                )
            )
        finally:
            vb.close()
            fast.__dict__.pop("vocoder", None)
        runs[with_ready] = (chunks, dict(vb.batches), vb.extended, done_at, vb.state()["trace"])
    (caught, batches, extended, told, trace), (plain, plain_batches, _, _, _) = runs[True], runs[False]
    # each later chunk carries its listener's playback deadline (first chunk: none; the first audio starts it)
    assert trace[0]["slack_ms"] == [None] and all(x is not None for c in trace[1:] for x in c["slack_ms"])
    # first chunk alone; then 7 due tokens and 15 more with the end: 6 + 6 + 6 and the last 4, in one call of 4
    assert batches == {1: 1, 4: 1}, batches
    assert extended == 1  # the last chunk (4 new + 2 context) reached the steady length with more context
    assert plain_batches == {1: 5}, plain_batches
    assert told == [1]  # the next sentence may start once the end is seen: after the first call, before the catch-up
    assert [len(c) for c in caught] == [len(c) for c in plain]  # first, 3 steady, the last, the held-back tail
    np.testing.assert_allclose(np.concatenate(caught[:-2]), np.concatenate(plain[:-2]), atol=1e-4)


def test_every_streamed_chunk_has_a_captured_shape() -> None:
    """Streaming vocodes the first chunk, steady chunks and a shorter last chunk per sentence; each is padded
    with real left context to one of chunk_shapes() (the shapes whose S3Gen graphs warmup() captures), so no
    chunk is vocoded eagerly once a sentence has at least first_chunk_tokens valid tokens. The context never
    reaches before the sentence and is at least min(context_tokens, done) wherever a shape allows."""
    from ttsbench.chatterbox.fast import chunk_shapes, left_context

    for first, chunk, context in ((12, 50, 8), (12, 100, 8), (8, 25, 4), (4, 4, 2)):
        shapes = chunk_shapes(first, chunk, context)
        assert shapes[0] == first and shapes[-1] == chunk + context and list(shapes) == sorted(set(shapes))
        short = 0
        for total in range(first, 400):
            done, target, seen = 0, first, []
            while total - done >= target:
                seen.append((target, done, left_context(target, done, context, shapes)))
                done, target = done + target, chunk
            if total > done:
                seen.append((total - done, done, left_context(total - done, done, context, shapes)))
            for n, before, ctx in seen:
                assert 0 <= ctx <= before and n + ctx in shapes, (first, chunk, context, total, seen)
                short += ctx < min(context, before)
            assert [c for n, b, c in seen[:2]][:1] == [0]  # the first chunk has no context
        assert short <= 400 // 4, short  # less context than asked only where no shape allows it


def test_next_sentence_is_decoded_while_the_last_chunk_is_vocoded() -> None:
    """Engine.stream with batched decoding: every sentence's T3 is submitted to the scheduler, sentence k+1's
    when sentence k's last token is in (before its last chunk is vocoded), and each sentence's stream reads its
    own submission; a client that leaves early closes the submissions nobody will read (their slots are freed).
    Stand-ins for the fast path and the scheduler record the calls; the real ones run in
    test_server_streams_through_the_fast_path."""
    from types import SimpleNamespace

    from ttsbench.chatterbox.server import Engine, ServerConfig

    events: list = []

    class Started:
        def __init__(self, text: str) -> None:
            self.text, self.closed = text, False

        def close(self) -> None:
            self.closed = True

        def __enter__(self) -> Started:
            return self

        def __exit__(self, *exc: object) -> None:
            self.close()

    submitted: list[Started] = []

    def submit(cond, text_tokens, cap, params) -> Started:
        submitted.append(Started(text_tokens))
        events.append(("submit", text_tokens))
        return submitted[-1]

    def stream(sentence, params, tokens=None, on_tokens_done=None, **kw):
        src = tokens(None, sentence, 0, params)
        events.append(("tokens", sentence, src.text))
        if on_tokens_done is not None:
            on_tokens_done()
        events.append(("last chunk", sentence))
        yield np.zeros(SAMPLES_PER_TOKEN, dtype=np.float32)

    fast = SimpleNamespace(
        scheduler=SimpleNamespace(submit=submit),
        stream=stream,
        text_tokens=lambda s: s,
        _prepare=lambda ex: None,
        model=SimpleNamespace(conds=SimpleNamespace(t3=None)),
    )
    eng = Engine.__new__(Engine)
    eng.cfg, eng.fast, eng.lock = ServerConfig(), fast, None
    out = list(eng.stream("One. Two. Three."))
    assert len(out) == 3
    assert events == [
        ("submit", "One."),
        ("tokens", "One.", "One."),
        ("submit", "Two."),
        ("last chunk", "One."),
        ("tokens", "Two.", "Two."),
        ("submit", "Three."),
        ("last chunk", "Two."),
        ("tokens", "Three.", "Three."),
        ("last chunk", "Three."),
    ]
    assert all(s.closed for s in submitted)  # read to the end, then closed (a no-op for the scheduler)
    events.clear()
    submitted.clear()
    gen = eng.stream("One. Two.")
    next(gen)  # the first sentence's only chunk: "Two." is decoding ahead
    gen.close()  # the client left
    assert [s.text for s in submitted] == ["One.", "Two."] and all(s.closed for s in submitted)


def test_full_graph_caches_run_new_shapes_eagerly_and_destroy_no_graph(monkeypatch) -> None:
    """NEVER_EVICT (fast_s3): destroying a CUDA graph clears the cuBLAS workspace that every other graph captured
    on the same stream embeds (pytorch/pytorch#193402), so the encoder/HiFT cache (GraphedCall) and the CFM step
    cache (GraphEuler) never drop a graph: past max_cached a new shape runs eagerly, and a capture error keeps the
    graphs held. Driven on the CPU with a stand-in for torch's CUDA graph API that records every graph made and
    destroyed (replays here do nothing, so only the eager results are compared)."""
    import contextlib
    import gc
    import weakref
    from types import SimpleNamespace

    from ttsbench.chatterbox import fast_s3
    from ttsbench.chatterbox.fast import GraphEuler

    made: list[weakref.ref] = []
    replays = {"n": 0}
    fail = {"on": False}

    class StandInGraph:
        def __init__(self) -> None:
            made.append(weakref.ref(self))

        def replay(self) -> None:
            replays["n"] += 1

    @contextlib.contextmanager
    def stand_in_capture(g: StandInGraph, pool: object = None):
        if fail["on"]:
            raise RuntimeError("capture failed")
        yield

    monkeypatch.setattr(fast_s3, "graphable", lambda t: True)
    monkeypatch.setattr(torch.cuda, "CUDAGraph", StandInGraph)
    monkeypatch.setattr(torch.cuda, "graph", stand_in_capture)
    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: object())
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)

    def alive() -> int:
        gc.collect()
        return sum(r() is not None for r in made)

    call = fast_s3.GraphedCall(lambda x: x * 2, "stand-in", max_cached=2)
    xs = [torch.full((1, n), float(n)) for n in (3, 4, 5, 6)]
    for x in xs:
        for _ in range(3):  # warm-up, capture, replay (for the first two shapes)
            call(x)
    assert call.captures == 2 and len(made) == 2 and alive() == 2
    assert call.state()["cached"] == 2 and call.state()["uncached"] == 2 * 3  # shapes 5 and 6, every call
    assert torch.equal(call(xs[3]), xs[3] * 2)  # eager, right value
    before = replays["n"]
    call(xs[0])
    assert replays["n"] == before + 1  # a held shape still replays
    fail["on"] = True
    call.max_cached = 4
    call(xs[2])  # first sight of a shape now admitted: warm-up
    call(xs[2])  # capture fails: graphing stops, the graphs held stay alive
    assert call.error and "capture failed" in call.error and alive() == len(made) - 1  # only the failed one
    assert torch.equal(call(xs[0]), xs[0] * 2)  # eager from now on
    fail["on"] = False

    made.clear()
    est = SimpleNamespace(dtype=torch.float32, forward=lambda x, mask, mu, t, spks, cond, r: torch.zeros_like(x))
    euler = GraphEuler(SimpleNamespace(estimator=est, inference_cfg_rate=0.7), max_cached=2)
    t_span = torch.linspace(0, 1, 4)
    for T in (8, 9, 10, 8, 11):
        x = torch.randn(1, 80, T)
        out = euler(x, t_span, torch.zeros(1, 80, T), torch.ones(1, 1, T), torch.zeros(1, 80), torch.zeros(1, 80, T))
        if T in (10, 11):  # past the limit: every step eager, the estimator's zeros leave x unchanged
            assert torch.equal(out, x)
    assert euler.captures == 2 and euler.uncached == 2 and len(euler._cache) == 2 and alive() == 2


def test_hift_graph_diff_probe_names_the_first_module_that_differs() -> None:
    """benchmarks/hift_graph_diff.py records every module's output by hook and names the first that differs
    between two runs (the GPU probe for --hift graph's 6e-5 difference relies on this order)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import hift_graph_diff as hd

    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    x = torch.randn(3, 4)
    a: list = []
    b: list = []
    with torch.no_grad():
        with hd.recording(net, a):
            net(x)
        assert hd.compare(a, a)["differing"] == 0
        net[2].bias[0] += 1e-3
        with hd.recording(net, b):
            net(x)
    res = hd.compare(a, b)
    assert res["calls"] == 4 and res["differing"] == 2  # the changed layer and the root, not layers before it
    assert res["first"][0]["module"] == "2" and res["first"][0]["type"] == "Linear"
    assert res["first"][0]["max_abs"] == pytest.approx(1e-3, rel=1e-3)
    assert "error" in hd.compare(a, b[:3])
