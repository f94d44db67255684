"""``ttsbench probe-llm URL``: latency of N small chat requests — the Gemma gate's measurement.

JSON (``--json``): {"url", "model", "n", "p50_ms", "p90_ms", "mean_ms", "samples_ms", "errors"}.
Exit 0 when every request succeeded, 1 when some failed (JSON still printed), 3 when unreachable.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("probe-llm", help="p50/p90 latency of N small /v1/chat/completions requests")
    p.add_argument("url", help="base URL of the OpenAI-style LLM server, e.g. http://titan:8003")
    p.add_argument("-n", type=int, default=5, help="timed requests (default 5)")
    p.add_argument("--warmup", type=int, default=0, help="untimed requests first")
    p.add_argument("--model", default=None, help="model id (default: the first of /v1/models)")
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import json
    import time

    import httpx

    from ttsbench.errors import UserError
    from ttsbench.metrics import percentile

    if args.n < 1:
        raise UserError("-n must be >= 1")
    base = args.url.rstrip("/")
    if base.endswith("/v1"):
        base = base[:-3]
    samples: list[float] = []
    errors: list[str] = []
    with httpx.Client(timeout=args.timeout) as client:
        try:
            model = args.model
            if model is None:
                r = client.get(f"{base}/v1/models")
                r.raise_for_status()
                data = r.json().get("data") or []
                if not data:
                    raise UserError(f"{base}/v1/models lists no model; pass --model")
                model = data[0]["id"]
            body = {
                "model": model,
                "messages": [{"role": "user", "content": "Reply with OK."}],
                "max_tokens": 1,
                "temperature": 0,
            }
            for i in range(args.warmup + args.n):
                t0 = time.perf_counter()
                try:
                    r = client.post(f"{base}/v1/chat/completions", json=body)
                    dt = (time.perf_counter() - t0) * 1000.0
                    if r.status_code >= 400:
                        errors.append(f"HTTP {r.status_code}: {' '.join(r.text.split())[:200]}")
                    elif i >= args.warmup:
                        samples.append(dt)
                except httpx.TimeoutException:
                    errors.append(f"timed out after {args.timeout:g} s")
        except httpx.ConnectError as exc:
            raise UserError(f"cannot reach LLM at {base}: {exc}", exit_code=3) from exc
        except httpx.HTTPStatusError as exc:
            raise UserError(
                f"{base}/v1/models: HTTP {exc.response.status_code}: {' '.join(exc.response.text.split())[:200]}",
                exit_code=3,
            ) from exc
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            raise UserError(f"LLM at {base} answered unexpectedly: {exc}", exit_code=3) from exc
    out = {
        "url": base,
        "model": model,
        "n": args.n,
        "p50_ms": percentile(samples, 50),
        "p90_ms": percentile(samples, 90),
        "mean_ms": (sum(samples) / len(samples)) if samples else None,
        "samples_ms": [round(s, 3) for s in samples],
        "errors": len(errors),
    }
    if args.json:
        print(json.dumps(out))
    elif samples:
        print(
            f"{base} ({model}): p50 {out['p50_ms']:.1f} ms, p90 {out['p90_ms']:.1f} ms, "
            f"mean {out['mean_ms']:.1f} ms over {len(samples)} request(s), {len(errors)} error(s)"
        )
    if not samples:
        raise UserError(f"LLM at {base}: all {len(errors)} request(s) failed; first: {errors[0]}", exit_code=3)
    if errors:
        import sys

        print(f"probe-llm: {len(errors)} request(s) failed; first: {errors[0]}", file=sys.stderr)
        return 1
    return 0
