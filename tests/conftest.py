"""Shared test set-up: Hypothesis profiles and the path to ../shared/templates."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT.parent / "shared" / "templates"
EXTRA_TEMPLATES = ROOT / "tests" / "templates"  # further real templates, with their sources

# "default" keeps the suite short; HYPOTHESIS_PROFILE=long for deep runs (see README).
settings.register_profile(
    "default",
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "long",
    max_examples=2_000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(scope="session")
def templates_dir() -> Path:
    assert TEMPLATES.is_dir(), f"the reference templates are missing: expected {TEMPLATES}"
    return TEMPLATES
