"""Shared fixtures: tiny seeded models (see models.py) and a seeded input. No downloads."""

from __future__ import annotations

import matplotlib
import pytest
import torch
from torch import Tensor, nn

import convlens as cl
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


@pytest.fixture(scope="module")
def alexnet() -> nn.Module:
    """A seeded torchvision AlexNet (random weights), shared by the shape and report tests."""
    torch.manual_seed(0)
    model: nn.Module = pytest.importorskip("torchvision").models.alexnet(weights=None)
    return model


@pytest.fixture(scope="module")
def alexnet_report(alexnet: nn.Module) -> cl.ShapeReport:
    return cl.trace_shapes(alexnet, (1, 3, 224, 224))
