"""Plain helpers the tests share: float tolerances derived from the dtype's precision, exact messages.

Shared fixtures live in conftest.py, the tiny models in models.py, the model-state snapshot in
invariants.py, the registry of entry points in entry_points.py: each thing once.

Float results depend on how a batch is split (over ranks, batches or chunks) and on the CPU's kernels
(which vectorize sums differently): compare them with tolerances derived from the dtype's machine
epsilon and the size of the values, never with a fixed number that happened to pass on one machine.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import TypedDict

import torch

#: How many roundings a result may carry (a few sums, a softmax, a division): the tolerance is this
#: many machine epsilons of the dtype, relative to the values' size.
ROUNDINGS = 64


class Tolerance(TypedDict):
    """Keyword arguments of ``torch.testing.assert_close``: ``assert_close(a, b, **tolerance())``."""

    rtol: float
    atol: float


def tolerance(
    dtype: torch.dtype = torch.float32, *, scale: float = 1.0, roundings: int = ROUNDINGS
) -> Tolerance:
    """``rtol`` and ``atol`` for values of about ``scale`` computed in ``dtype``.

    ``atol`` covers values near zero that are differences of numbers of size ``scale`` (a drop in
    confidence in percent is ``100 * (Y - O) / Y``: its error is that of ``100 * Y``, not of itself).
    """
    eps = torch.finfo(dtype).eps
    return {"rtol": roundings * eps, "atol": roundings * eps * scale}


def exact(message: str) -> str:
    """A ``pytest.raises(match=...)`` pattern that matches ``message`` exactly and nothing else."""
    return "^" + re.escape(message) + "$"


def torchrun(*argv: str, timeout: float = 300, ranks: int = 2) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (a script and its arguments, or ``-m module ...``) as ``ranks`` gloo ranks on loopback.

    One thread per rank (the machine has two cores); the run must succeed (its stderr's end is the
    failure message); returns it for its stdout.
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "MASTER_ADDR": "127.0.0.1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks)]
    done = subprocess.run(
        [*command, *argv], check=False, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done
