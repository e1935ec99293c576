"""A worker that ``tests/test_distributed.py`` starts under ``torchrun`` (two gloo ranks on loopback).

Each rank runs the same dataset-level calls as one process would and saves what
it returned, and which examples it read, to ``OUT/rank<r>.pt``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import DataLoader, DistributedSampler

from convlens import NeuronVisualizer
from distributed_cases import CASES, RecordingDataset, case_model  # the script's folder is on sys.path


def main(out: Path) -> None:
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    rank = dist.get_rank()
    saved: dict[str, Any] = {}
    for name, size in CASES.items():
        model, layer = case_model()
        data = RecordingDataset(size)
        best = NeuronVisualizer(model, layer).top_examples(data, k=5, batch_size=4, progress=False)
        saved[name] = {"result": _plain(best), "read": sorted(data.read)}
    # A DataLoader keeps its own sampler: a DistributedSampler that shuffles.
    model, layer = case_model()
    data = RecordingDataset(23)
    sampler: DistributedSampler[Any] = DistributedSampler(data, shuffle=True, seed=3)
    loader: DataLoader[Any] = DataLoader(data, batch_size=3, sampler=sampler)
    best = NeuronVisualizer(model, layer).top_examples(loader, unit=[1, 2], k=4, progress=False)
    saved["loader"] = {
        "result": _plain(best),
        "read": sorted(data.read),
        "own": sorted(int(i) for i in sampler),
    }
    torch.save(saved, out / f"rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


def _plain(result: Any) -> dict[str, Tensor | None]:
    fields = ("indices", "activations", "inputs", "positions", "boxes")
    return {f: getattr(result, f) for f in fields}


if __name__ == "__main__":
    main(Path(sys.argv[1]))
