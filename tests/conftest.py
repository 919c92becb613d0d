import os

import pytest

# deterministic, quiet, and within 2 CPU cores
os.environ.setdefault("OMP_NUM_THREADS", "2")

import fpt  # noqa: E402,F401  (applies the compat layer before any detectron2 import)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def repo_root():
    return REPO
