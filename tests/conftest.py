import os

import pytest

# deterministic, quiet, and within 2 CPU cores
os.environ.setdefault("OMP_NUM_THREADS", "2")
# idle OpenMP threads sleep instead of spinning: on 2 shared cores, spinning threads starve the
# other processes of a test (data loader workers, DDP peers, pipelines): 2-10x slower otherwise
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import fpt  # noqa: E402,F401  (applies the compat layer before any detectron2 import)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def repo_root():
    return REPO
