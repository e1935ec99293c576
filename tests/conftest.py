"""Shared fixtures: tiny seeded models (see models.py) and a seeded input. No downloads."""

from __future__ import annotations

import matplotlib
import pytest
import torch
from torch import Tensor

from models import DictNet, InplaceNet, ReusedNet, seeded

matplotlib.use("Agg")


@pytest.fixture
def reused_net() -> ReusedNet:
    net = ReusedNet()
    seeded(net)
    return net


@pytest.fixture
def inplace_net() -> InplaceNet:
    net = InplaceNet()
    seeded(net)
    return net


@pytest.fixture
def dict_net() -> DictNet:
    net = DictNet()
    seeded(net)
    return net


@pytest.fixture
def image() -> Tensor:
    return torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
