"""The e2e marker: browser tests run only when asked for."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """e2e tests install several GB; they run only when asked for with `-m e2e`."""
    if "e2e" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(
        reason="end-to-end browser test: run with `pytest -m e2e tests/appliance` (README)"
    )
    for item in items:
        if "e2e" in item.keywords:
            item.add_marker(skip)
