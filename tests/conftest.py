"""Shared pytest fixtures for ttsbench."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

import _testhosts

# `make test` runs its main pass as two pytest processes side by side (tests/run-suite), one per core. Tests that
# share machine-wide state must stay in one process, one after the other:
# - lane a: inventory/rehearsal (fixed ports, ~/.cache/ttsbench/rehearsal/<host>), plus the local role cycles
#   (molecule, gemma_guard), which balance the load;
# - lane b: everything else, among it every test of the network-namespace SSH hosts titan/panda (one set per
#   machine). (pytest-xdist's loadgroup does not keep xdist_group tests together under pytest 9.2: measured.)
REHEARSAL_MODULES = {"test_playbooks_e2e.py", "test_ping_rehearsal.py"}
LANE_A_MODULES = {"test_molecule.py", "test_gemma_guard.py"}


def lane_of(item: pytest.Item) -> str:
    """Which of the two processes of make test's main pass runs this test."""
    if "testhosts" in getattr(item, "fixturenames", ()) or item.get_closest_marker("testhosts"):
        return "lane_b"
    if item.path.name in REHEARSAL_MODULES | LANE_A_MODULES:
        return "lane_a"
    return "lane_b"


@pytest.hookimpl(tryfirst=True)  # before the mark plugin applies -m
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(lane_of(item))


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
