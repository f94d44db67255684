"""Shared pytest fixtures for ttsbench."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

import _testhosts

# Property tests draw the same examples on every run of `make test` (a CI run must not fail on a newly drawn
# example nobody has seen); TTSBENCH_HYPOTHESIS=explore draws fresh ones, to hunt for new failures.
settings.register_profile("fixed", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile("explore" if os.environ.get("TTSBENCH_HYPOTHESIS") == "explore" else "fixed")


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
            reporter.write_line(
                f"TTSBENCH_REQUIRE_CHATTERBOX=1: {len(skipped)} skipped, "
                f"{session.testscollected} collected — the chatterbox venv must run them all"
            )
        session.exitstatus = 1
