"""``ttsbench probe-tts URL``: is this speech server giving good audio (not errors, not silence)? Prints JSON."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("probe-tts", help="one speech request judged as good audio (RMS + duration); JSON out")
    p.add_argument("url", help="server base URL or its /v1/audio/speech URL")
    p.add_argument("--text", default="Hello, this is a failover check. The voice should sound normal.")
    p.add_argument("--voice", default=None)
    p.add_argument("--model", default=None)
    p.add_argument(
        "--request-template",
        default=None,
        metavar="FILE|openai",
        help="speak any TTS HTTP API (see bench-http --request-template); URL is the base URL",
    )
    p.add_argument("--reference", default=None, help="reference WAV for {reference_audio_...} placeholders")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="check the arguments and the template, print the request that would be sent, send nothing",
    )
    p.add_argument("--token", default=None, help="bearer token (or env TTSBENCH_TTS_TOKEN)")
    p.add_argument("--timeout", type=float, default=120.0, help="per-request timeout in seconds")
    p.add_argument("--min-duration-s", type=float, default=0.5, help="shorter audio is not good")
    p.add_argument("--min-rms-dbfs", type=float, default=-45.0, help="quieter audio is silence")
    p.add_argument(
        "--until-ok",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="repeat until good audio or this many seconds passed (0: one request)",
    )
    p.add_argument("--interval", type=float, default=0.5, help="seconds between repeated requests")
    p.add_argument(
        "--expect",
        choices=["ok", "bad", "any"],
        default="ok",
        help="exit 0 when the result is this (bad = errors or silence, e.g. during an outage)",
    )
    p.add_argument("--run-dir", default=None, help="append the probe as a row of ENGINE@HOST in this run folder")
    p.add_argument("--engine", default="chatterbox")
    p.add_argument("--host-label", default=None)
    p.add_argument("--utt-id", default="probe")
    p.add_argument("--weights", default="n/a", choices=["hub", "local", "random-init", "n/a"])
    p.add_argument("--standin", action="store_true")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import json
    import os

    from ttsbench import speechprobe
    from ttsbench.errors import UserError

    speechprobe.check_thresholds(args.min_duration_s, args.min_rms_dbfs)
    template = reference = None
    if args.reference:
        from ttsbench.reference import load_reference

        reference = load_reference(args.reference)
    if args.request_template:
        from ttsbench import reqtemplate

        template = reqtemplate.load(args.request_template, stream="none", with_reference=reference is not None)
        reqtemplate.check_inputs(template, has_reference=reference is not None)
        req = template.render(
            args.url, reqtemplate.values(args.text, voice=args.voice, model=args.model, reference=reference)
        )  # unset placeholders fail here
        if args.dry_run:
            print(
                json.dumps(
                    {
                        "dry_run": True,
                        "template": template.describe(),
                        "method": req.method,
                        "url": req.url,
                        "body": req.body_obj,
                    }
                )
            )
            return 0
    elif args.dry_run:
        print(json.dumps({"dry_run": True, "template": None, "url": speechprobe.speech_url(args.url)}))
        return 0
    kw = {
        "voice": args.voice,
        "model": args.model,
        "timeout_s": args.timeout,
        "min_duration_s": args.min_duration_s,
        "min_rms_dbfs": args.min_rms_dbfs,
        "token": args.token or os.environ.get("TTSBENCH_TTS_TOKEN"),
        "template": template,
        "reference": reference,
    }
    if args.until_ok > 0:
        res, samples = speechprobe.probe_until_ok(
            args.url, args.text, until_ok_s=args.until_ok, interval_s=args.interval, **kw
        )
    else:
        res, samples = speechprobe.probe_once(args.url, args.text, **kw)
    out = res.to_dict()
    if args.run_dir:
        if not args.host_label:
            raise UserError("--run-dir needs --host-label (the system is ENGINE@HOST)")
        out["system_id"] = speechprobe.record(
            args.run_dir,
            res,
            samples,
            engine=args.engine,
            host=args.host_label,
            utt_id=args.utt_id,
            text=args.text,
            weights=args.weights,
            standin=args.standin,
            template=template.describe() if template is not None else None,
        )
    print(json.dumps(out))
    if args.expect == "any":
        return 0
    return 0 if res.ok == (args.expect == "ok") else 1
