"""Shared test fixtures: tiny model configurations and the shared-data location."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# A YNet small enough for unit tests: 64x64 input, core node 2x2x64.
TINY = dict(
    input_shape=(64, 64, 1),
    num_classes=2,
    num_mask_classes=3,
    stem_filters=4,
    stage_widths=(4, 4, 4, 16),
    stage_blocks=(1, 1, 1, 1),
    fpn_channels=8,
    rmac_channels=16,
)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent")
    return SHARED_DATA
