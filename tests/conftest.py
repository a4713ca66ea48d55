"""Shared pytest fixtures: per-test build folders under build/tests/."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def build_dir(request) -> Path:
    """A fresh folder under build/tests/ named after the test (parametrisation included)."""
    path = ROOT / "build" / "tests" / re.sub(r"[^\w.-]+", "_", request.node.name).strip("_")
    path.mkdir(parents=True, exist_ok=True)
    return path
