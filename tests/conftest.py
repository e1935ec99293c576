"""Shared fixtures: tiny seeded models (see models.py), AlexNet, the digits CNN and data, a seeded input.

No downloads. Plain helpers are in helpers.py; a fixture is defined here once, never again in a test file.
"""

from __future__ import annotations

import matplotlib
import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset

import convlens as cl
from convlens.models.zoo import DigitsCNN, digits_cnn, digits_dataset
from models import DictNet, InplaceNet, ReusedNet, seeded, seeded_alexnet

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
    """A seeded torchvision AlexNet (random weights, train mode as built), shared by a module's tests."""
    return seeded_alexnet(train=True)


@pytest.fixture(scope="module")
def alexnet_report(alexnet: nn.Module) -> cl.ShapeReport:
    return cl.trace_shapes(alexnet, (1, 3, 224, 224))


@pytest.fixture(scope="module")
def digits() -> DigitsCNN:
    """The lecture's digits CNN with its shipped weights."""
    return digits_cnn()


@pytest.fixture(scope="module")
def test_set() -> TensorDataset:
    """The digits test split."""
    return digits_dataset("test")
