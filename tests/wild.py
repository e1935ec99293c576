"""Small models for the input-diagnosis and wild-model tests: each shaped like a real architecture's trap."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

import torch
from torch import Tensor, nn

M = TypeVar("M", bound=nn.Module)


class StemNet(nn.Module):
    """ResNet's stem in miniature: conv(3->8, stride 2) -> BatchNorm -> ReLU -> MaxPool -> conv -> pool -> fc.

    One unbatched image ``(3, H, W)`` passes ``conv1`` (Conv2d takes unbatched input) and then reaches
    ``bn1`` as a batch of 8 images of 16 channels: the BatchNorm's "expects 8 channels, got 16" is the
    misleading message a careless diagnosis would give.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(16, 5)

    def forward(self, x: Tensor) -> Tensor:
        h = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        out: Tensor = self.fc(self.flatten(self.avgpool(self.conv2(h))))
        return out


def small_cnn() -> nn.Sequential:
    """``features`` (conv, ReLU, conv, ReLU) then pooling and a head; seeded."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    )


class FeatureNet(nn.Module):
    """``features`` / ``head`` like torchvision's classifiers, with a module that must never run for real.

    ``guard`` sits after ``features.0``; while ``guard_armed`` it raises on any non-meta input, so a
    forward that was meant to stop at ``features.0`` proves it did. ``guard_calls`` counts its real calls.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1))
        self.guard = Guard()
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.head(self.guard(self.features(x)))
        return out


class Guard(nn.Module):
    """Identity that counts its real (non-meta) calls and, while ``armed``, refuses them."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        if not x.is_meta:
            self.calls += 1
            if self.armed:
                raise RuntimeError("guard ran on a real tensor: the forward did not stop early")
        return x


@dataclass
class Output:
    """A model output as Hugging Face style models return it: a non-tensor field, then the logits."""

    name: str
    logits: Tensor


@dataclass
class NoTensorOutput:
    """An output holding no tensor at all."""

    name: str
    score: float


class Pair(NamedTuple):
    logits: Tensor
    hidden: Tensor


class Wrapped(nn.Module):
    """``small_cnn``'s layers, returning the logits plainly, in a dataclass, a NamedTuple or as no tensor."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.net = small_cnn()

    def forward(self, x: Tensor) -> Tensor | Output | Pair | NoTensorOutput:
        logits: Tensor = self.net(x)
        if self.kind == "dataclass":
            return Output(name="logits", logits=logits)
        if self.kind == "namedtuple":
            return Pair(logits=logits, hidden=logits.detach() * 0)
        if self.kind == "none":
            return NoTensorOutput(name="nothing", score=0.0)
        return logits


class TinyViT(nn.Module):
    """A patch embedding, a token-wise ``block`` giving ``(N, L, C)``, a mean over tokens and a head."""

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, 8, 4, stride=4)
        self.block = nn.Linear(8, 8)
        self.head = nn.Linear(8, 5)

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.patch(x).flatten(2).transpose(1, 2)  # (N, L, C)
        out: Tensor = self.head(torch.tanh(self.block(tokens)).mean(dim=1))
        return out


class ResidualBlock(nn.Module):
    """torchvision's BasicBlock: ``out = bn2(conv2(relu(bn1(conv1(x))))); out += identity; relu(out)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        result: Tensor = self.relu(out)
        return result


class ResidualNet(nn.Module):
    """A stem conv, one :class:`ResidualBlock` (``block``) and a ``head`` that runs after its ``+=``."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.block = ResidualBlock(4)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.head(self.block(self.stem(x)))
        return out


def seeded_bn(module: M, seed: int = 0) -> M:
    """Non-trivial running statistics and affine parameters for every BatchNorm, so bn2 is not the identity."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d) and m.running_mean is not None and m.running_var is not None:
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.randn(m.num_features, generator=gen))
                m.bias.copy_(torch.randn(m.num_features, generator=gen))
    return module


class BatchedDetector(nn.Module):
    """A detector behind a batch-tensor interface: ``forward(x)`` is ``detector(list(x))``."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.det = detector

    def forward(self, x: Tensor) -> list[dict[str, Tensor]]:
        out: list[dict[str, Tensor]] = self.det(list(x))
        return out


def jit(how: str, model: nn.Module, x: Tensor) -> Any:
    """``torch.jit.script`` (how="script") or ``torch.jit.trace`` of ``model``, without the deprecation warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, and still in use
        if how == "script":
            return torch.jit.script(model)
        return torch.jit.trace(model, x)  # type: ignore[no-untyped-call]
