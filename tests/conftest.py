"""Shared fixtures."""

from pathlib import Path

import pytest
from fuzzing import load_profile

# The fuzz tests' hypothesis profile: `fast` (CI) unless RLAIF_HYPOTHESIS_PROFILE=long (see fuzzing.py).
load_profile()

#: Real human preference data, kept outside the repository (see ../shared/data/README.md).
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared folder of real preference data; tests using it skip only if it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder not found: {SHARED_DATA}")
    return SHARED_DATA
