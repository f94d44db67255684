"""Shared pytest fixtures for ttsbench."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

import _testhosts

# Tests that share machine-wide state must run on one xdist worker, one after the other (--dist loadgroup):
# - "testhosts": the network-namespace SSH hosts titan/panda (one set per machine, brought up once per worker);
# - "rehearsal": inventory/rehearsal's fixed ports and ~/.cache/ttsbench/rehearsal/<host> roots.
# Everything else is independent (own tmp dirs, free ports) and is spread over the workers.
REHEARSAL_MODULES = {"test_playbooks_e2e.py", "test_ping_rehearsal.py"}


def xdist_group_of(item: pytest.Item) -> str | None:
    """The serial group a test belongs to, from what it uses (fixtures, markers, module)."""
    if "testhosts" in getattr(item, "fixturenames", ()) or item.get_closest_marker("testhosts"):
        return "testhosts"
    if item.path.name in REHEARSAL_MODULES:
        return "rehearsal"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        group = xdist_group_of(item)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session")
def testhosts() -> Iterator[_testhosts.NamespaceHosts]:
    """Bring up the namespace SSH hosts titan/panda for the session; down at the end.

    Skips (with the reason) when not root or a tool is missing; fails instead in CI or with
    TTSBENCH_REQUIRE_TESTHOSTS=1. TTSBENCH_TESTHOSTS_KEEP=1 leaves the hosts up afterwards.
    """
    missing = _testhosts.missing_prerequisites()
    if missing:
        reason = "namespace test hosts need: " + ", ".join(missing)
        if os.environ.get("CI") or os.environ.get("TTSBENCH_REQUIRE_TESTHOSTS") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    hosts = _testhosts.up()
    yield hosts
    if os.environ.get("TTSBENCH_TESTHOSTS_KEEP") != "1":
        _testhosts.down()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With TTSBENCH_REQUIRE_CHATTERBOX=1 (make test's chatterbox pass) a skipped test is a failure:
    the chatterbox venv must really run them, not skip them for a missing import."""
    if os.environ.get("TTSBENCH_REQUIRE_CHATTERBOX") != "1":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped or session.testscollected == 0:
        if reporter:
            reporter.write_line(f"TTSBENCH_REQUIRE_CHATTERBOX=1: {len(skipped)} skipped, "
                                f"{session.testscollected} collected — the chatterbox venv must run them all")
        session.exitstatus = 1
