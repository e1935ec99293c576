"""The models and data shared by ``distributed_worker.py`` and ``test_distributed.py``."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

#: Dataset sizes: one that two ranks split evenly, one that leaves DistributedSampler padding.
CASES = {"even": 24, "padded": 23}


class RecordingDataset(Dataset[tuple[Tensor, int]]):
    """Seeded pictures with ties built in; remembers which indices it was asked for."""

    def __init__(self, size: int) -> None:
        gen = torch.Generator().manual_seed(size)
        self.x = torch.randn(size, 1, 9, 9, generator=gen)
        self.x[size // 2] = self.x[1]  # equal activations: ties go to the lower position
        self.x[0] *= 4  # the strongest example: the one DistributedSampler's padding repeats
        self.read: set[int] = set()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        self.read.add(int(index))
        return self.x[index], index % 3


def case_model() -> tuple[nn.Module, str]:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 3, 3), nn.ReLU()
    )
    return net.eval(), "4"
