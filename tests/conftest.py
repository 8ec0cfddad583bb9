"""Shared pytest setup: every test starts from its own fixed seed."""

from __future__ import annotations

import zlib

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed(request: pytest.FixtureRequest) -> int:
    """Seed torch from the test's id: fresh inputs per test, the same on every run."""
    seed = zlib.crc32(request.node.nodeid.encode())
    torch.manual_seed(seed)
    return seed
