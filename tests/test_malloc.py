"""fpt.utils.malloc: with glibc, freed large blocks are reused instead of page-faulted in again."""

import json
import subprocess
import sys

import pytest

PROGRAM = r"""
import json, resource, sys
import torch
from fpt.utils.malloc import keep_freed_memory

kept = keep_freed_memory() if sys.argv[1] == "keep" else None
faults = []
for _ in range(6):  # a 64 MB tensor made, written and freed, as an activation per iteration
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = torch.empty(16 * 2**20).fill_(1.0)
    del t
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"kept": kept, "faults": faults}))
"""


def run(mode):
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_large_blocks_are_reused_instead_of_faulted_in_again():
    pages = 64 * 2**20 // 4096
    system = run("system")
    assert all(f > pages // 2 for f in system["faults"])  # every iteration faults it in again
    kept = run("keep")
    assert kept["kept"] is True
    # the heap grows for the first few (a freed block does not fit the next aligned request
    # until neighbours merge), then the freed memory is reused
    assert kept["faults"][0] > pages // 2 and max(kept["faults"][3:]) < pages // 20
