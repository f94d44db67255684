"""The rehearsal inventory end to end: smoke playbook reaches every host, writes into its own root."""

from __future__ import annotations

import json

from ttsbench.runner import run_playbook

HOSTS = ("titan", "panda")


def test_rehearsal_smoke_writes_facts_per_host_and_is_idempotent(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home)}

    first = run_playbook("rehearsal-smoke.yml", "inventory/rehearsal", envvars=env, private_data_dir=tmp_path / "r1")
    assert first.ok, first.failure_messages()
    assert set(first.stats.get("ok", {})) == set(HOSTS)
    assert all(first.changed_by_host().get(h, 0) > 0 for h in HOSTS), first.changed_by_host()
    for host in HOSTS:
        facts = home / ".cache" / "ttsbench" / "rehearsal" / host / "host-facts.json"
        data = json.loads(facts.read_text())
        assert data["host"] == host
        assert data["arch"] and data["python"].startswith("3.")

    second = run_playbook("rehearsal-smoke.yml", "inventory/rehearsal", envvars=env, private_data_dir=tmp_path / "r2")
    assert second.ok, second.failure_messages()
    assert {h: second.changed_by_host().get(h, 0) for h in HOSTS} == dict.fromkeys(HOSTS, 0)
