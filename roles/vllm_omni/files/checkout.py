#!/usr/bin/env python3
"""Host-side helper of roles/vllm_omni: clone, resolve, check out and cherry-pick, idempotently.

Usage: checkout.py SRC REPO VERSION [PICK ...]
Prints one JSON line: {"changed", "sha", "picks": [resolved SHAs], "applied": [every commit SHA applied], "head"}
or {"error", "variable", ...}. A ref pick (refs/pull/N/head) applies all the PR's commits: merge-base(base,
head)..head, oldest first; a conflict aborts and names the files.
The applied state is remembered in SRC/.git/ttsbench-applied.json; when it matches, nothing is touched.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

IDENTITY = ["-c", "user.name=ttsbench", "-c", "user.email=ttsbench@localhost", "-c", "advice.detachedHead=false"]


def git(src: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["git", *IDENTITY, "-C", str(src), *args], capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {proc.stderr.strip()[-800:]}")
    return proc


def resolve(src: Path, ref: str) -> str | None:
    for cand in (f"refs/remotes/origin/{ref}", f"refs/tags/{ref}", ref):
        proc = git(src, "rev-parse", "--verify", "--quiet", f"{cand}^{{commit}}", check=False)
        if proc.returncode == 0:
            return proc.stdout.strip()
    return None


def out(obj: dict[str, object], rc: int = 0) -> int:
    print(json.dumps(obj))
    return rc


def main(argv: list[str]) -> int:
    src, repo, version, picks = Path(argv[0]), argv[1], argv[2], argv[3:]
    changed = False
    if not (src / ".git").is_dir():
        src.parent.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            ["git", "clone", "--no-checkout", repo, str(src)], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            return out({"error": f"cannot clone {repo}: {proc.stderr.strip()[-500:]}", "variable": "vllm_omni_repo"}, 2)
        changed = True
    git(src, "remote", "set-url", "origin", repo)
    git(src, "fetch", "--quiet", "--tags", "--force", "origin", "+refs/heads/*:refs/remotes/origin/*")
    sha = resolve(src, version)
    if sha is None:
        git(src, "fetch", "--quiet", "origin", version, check=False)
        sha = resolve(src, version)
    if sha is None:
        return out({"error": f"{version!r} is no commit, tag or branch of {repo}", "variable": "vllm_omni_version"}, 2)
    resolved: list[str] = []
    for i, pick in enumerate(picks):
        if pick.startswith("refs/"):
            local = f"refs/ttsbench/picks/{i}"
            proc = git(src, "fetch", "--quiet", "--force", "origin", f"+{pick}:{local}", check=False)
            rsha = resolve(src, local) if proc.returncode == 0 else None
        else:
            rsha = resolve(src, pick)
            if rsha is None:
                git(src, "fetch", "--quiet", "origin", pick, check=False)
                rsha = resolve(src, pick)
        if rsha is None:
            return out({"error": f"cherry-pick {pick!r} not found in {repo}", "variable": "vllm_omni_cherry_picks"}, 2)
        resolved.append(rsha)
    applied: list[str] = []
    for pick, rsha in zip(picks, resolved, strict=True):
        base = git(src, "merge-base", sha, rsha, check=False).stdout.strip() if pick.startswith("refs/") else ""
        if base and base != rsha:
            commits = git(src, "rev-list", "--reverse", "--no-merges", f"{base}..{rsha}").stdout.split()
        else:
            commits = [rsha]
        applied += [c for c in commits if c not in applied]
    want = {"sha": sha, "picks": resolved, "applied": applied}
    state_file = src / ".git" / "ttsbench-applied.json"
    head = git(src, "rev-parse", "--verify", "--quiet", "HEAD", check=False).stdout.strip()
    status = git(src, "status", "--porcelain", "--untracked-files=no").stdout.strip()
    if state_file.is_file():
        prev = json.loads(state_file.read_text())
        if prev.get("want") == want and prev.get("head") == head and not status:
            return out({"changed": changed, **want, "head": head})
    if (src / ".git" / "CHERRY_PICK_HEAD").exists():
        git(src, "cherry-pick", "--abort", check=False)
    git(src, "checkout", "--quiet", "--force", "--detach", sha)
    owner = {c: p for p, r in zip(picks, resolved, strict=True) for c in [r]}
    for rsha in applied:
        pick = owner.get(rsha, "commit of " + ", ".join(picks))
        proc = git(src, "cherry-pick", "-x", rsha, check=False)
        if proc.returncode != 0:
            files = git(src, "diff", "--name-only", "--diff-filter=U", check=False).stdout.split()
            git(src, "cherry-pick", "--abort", check=False)
            git(src, "checkout", "--quiet", "--force", "--detach", sha)
            state_file.unlink(missing_ok=True)
            return out(
                {
                    "error": f"cherry-pick {pick} ({rsha[:12]}) conflicts in: {', '.join(files) or '?'}; "
                    "it was aborted — drop or reorder it in vllm_omni_cherry_picks",
                    "variable": "vllm_omni_cherry_picks",
                    "conflicting_files": files,
                },
                3,
            )
    head = git(src, "rev-parse", "HEAD").stdout.strip()
    tmp = state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps({"want": want, "head": head}))
    tmp.replace(state_file)
    return out({"changed": True, **want, "head": head})


if __name__ == "__main__":
    try:
        raise SystemExit(main(sys.argv[1:]))
    except RuntimeError as exc:
        raise SystemExit(out({"error": str(exc), "variable": "vllm_omni_repo"}, 1)) from None
