"""Shared pytest fixtures for ttsbench."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

import _testhosts


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
