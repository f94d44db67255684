#!/usr/bin/env python3
"""Build an offline wheelhouse for roles/chatterbox on hosts without internet (the namespace test hosts).

Usage: chatterbox_wheelhouse.py DEST HOST_TORCH_PYTHON

Resolves the role's inference requirements against the host torch exactly as the role will (a scratch venv
with the host torch linked in, torch/torchaudio constrained), then downloads exactly those wheels plus
chatterbox-tts itself. Needs PyPI (or pip's cache) on the controller. Idempotent: a stamp holds the inputs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEFAULTS = ROOT / "roles" / "chatterbox" / "defaults" / "main.yml"


def _probe(python: str) -> dict:
    out = subprocess.run(
        [python, str(ROOT / "roles/chatterbox/files/torch_probe.py")], capture_output=True, text=True, check=True
    ).stdout
    info = json.loads(out)
    if "error" in info:
        raise SystemExit(f"{python} cannot import torch: {info['error']}")
    return info


def build(dest: Path, host_python: str) -> Path:
    defaults = yaml.safe_load(DEFAULTS.read_text())
    recipe = ROOT / "files" / "chatterbox" / "inference-requirements.txt"
    lines = defaults["chatterbox_inference_requirements"] or [
        line.split("#", 1)[0].strip() for line in recipe.read_text().splitlines()
    ]
    reqs = [r for r in lines if r] + list(defaults["chatterbox_ttsbench_requirements"])
    version = defaults["chatterbox_version"]
    info = _probe(host_python)
    key = json.dumps(
        {"reqs": reqs, "chatterbox": version, "torch": info["torch"], "dirs": info["site_dirs"]}, sort_keys=True
    )
    stamp = dest / ".stamp.json"
    if stamp.is_file() and stamp.read_text() == key:
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cb-wheelhouse-") as tmp:
        t = Path(tmp)
        subprocess.run(["/usr/bin/python3", "-m", "venv", str(t / "venv")], check=True)
        purelib = subprocess.run(
            [str(t / "venv/bin/python"), "-c", "import sysconfig;print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        Path(purelib, "zz-ttsbench-host-torch.pth").write_text("\n".join(info["site_dirs"]) + "\n")
        cons = t / "constraints.txt"
        audio = f"torchaudio=={info['torchaudio']}\n" if info["torchaudio"] else ""
        cons.write_text(f"torch=={info['torch']}\n" + audio)
        (t / "req.txt").write_text("\n".join(reqs) + "\n")
        report = t / "report.json"
        subprocess.run(
            [
                str(t / "venv/bin/python"),
                "-m",
                "pip",
                "install",
                "-q",
                "--dry-run",
                "--report",
                str(report),
                "-r",
                str(t / "req.txt"),
                "-c",
                str(cons),
            ],
            check=True,
        )
        pins = [
            f"{i['metadata']['name']}=={i['metadata']['version']}" for i in json.loads(report.read_text())["install"]
        ]
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "-d",
                str(dest),
                f"chatterbox-tts=={version}",
                *pins,
            ],
            check=True,
        )
    stamp.write_text(key)
    return dest


if __name__ == "__main__":
    print(build(Path(sys.argv[1]), sys.argv[2]))
