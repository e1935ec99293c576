"""Models shared by the tests: tiny ones (a reused module, in-place ops, tuple and dict outputs), AlexNet."""

from __future__ import annotations

import copy
from typing import Any, TypeVar

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ReusedNet(nn.Module):
    """One ReLU module called three times per forward, plus functional ops."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4, 5)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.conv1(x))
        x = self.relu(self.conv2(x))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        out: Tensor = self.relu(self.fc(x))
        return out


class InplaceNet(nn.Module):
    """AlexNet in miniature: in-place ReLUs right after the convs, and a residual `+=`."""

    def __init__(self, inplace: bool = True) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1),
            nn.ReLU(inplace=inplace),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 6, 3, padding=1),
            nn.ReLU(inplace=inplace),
        )
        self.bn = nn.BatchNorm2d(6)
        self.classifier = nn.Linear(6, 4)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        identity = x
        out = self.bn(x)
        out += identity
        logits: Tensor = self.classifier(out.mean(dim=(2, 3)))
        return logits


class DictNet(nn.Module):
    """A model whose forward returns a dict and whose block returns a tuple."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(2, 3, 3)
        self.gru = nn.GRU(3, 4, batch_first=True)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        h = self.conv(x)
        out, last = self.gru(h.transpose(1, 2))
        return {"out": out, "last": last}


def seeded(module: nn.Module, seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return module


M = TypeVar("M", bound=nn.Module)


def without_inplace(model: M) -> M:
    """A copy of ``model`` whose ReLUs are not in place (the same function, no rewritten outputs)."""
    clone = copy.deepcopy(model)
    for module in clone.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
    return clone


def seeded_alexnet(*, inplace: bool = True, train: bool = False) -> nn.Module:
    """A torchvision AlexNet with random weights from seed 0, in eval mode unless ``train``.

    Seeds the global RNG (``torch.manual_seed(0)``), so that what a test draws after it is the same on
    every run. ``inplace=False``: its ReLUs are not in place. Skips the test without torchvision.
    """
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model: nn.Module = torchvision.models.alexnet(weights=None).train(train)
    return model if inplace else without_inplace(model)


def quantized_engine() -> str:
    """A quantized engine this CPU supports (fbgemm or x86 on x86-64, qnnpack on ARM), set as torch's engine.

    Skips the test where there is none.
    """
    engines = torch.backends.quantized.supported_engines
    engine = next((e for e in ("fbgemm", "x86", "qnnpack") if e in engines), None)
    if engine is None:
        pytest.skip(f"no quantized engine on this CPU ({engines})")
    torch.backends.quantized.engine = engine
    return engine


def quantize(model: M, calibration: Tensor) -> M:
    """``model`` (with its QuantStub and DeQuantStub) quantized the eager way, calibrated on ``calibration``.

    The engine is one this CPU supports (:func:`quantized_engine`); the model is in eval mode.
    """
    import warnings

    engine = quantized_engine()
    model.eval()
    model.qconfig = torch.ao.quantization.get_default_qconfig(engine)  # type: ignore[no-untyped-call]
    with warnings.catch_warnings():  # torch.ao.quantization's deprecation notices, not ours
        warnings.simplefilter("ignore")
        prepared = torch.ao.quantization.prepare(model)  # type: ignore[no-untyped-call]
        with torch.no_grad():
            prepared(calibration)
        quantized: M = torch.ao.quantization.convert(prepared)  # type: ignore[no-untyped-call]
    return quantized


def quantized_cnn() -> nn.Module:
    """A small CNN quantized the eager way (a QuantStub, conv+relu, pooling, a linear head), in eval mode.

    Input ``(N, 3, 12, 12)``; skips the test where this CPU has no quantized engine.
    """
    torch.manual_seed(0)
    model = nn.Sequential(
        torch.ao.quantization.QuantStub(),
        nn.Conv2d(3, 8, 3),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
        torch.ao.quantization.DeQuantStub(),
    )
    return quantize(model, torch.rand(4, 3, 12, 12))


class CallLog:
    """A model's calls, logged where the probe's snapshot of module attributes does not reach.

    The probe restores the lists and dicts a module holds after its meta pass; an object like this one
    is not walked, so the meta call stays in the log.
    """

    def __init__(self) -> None:
        self.entries: list[tuple[Any, ...]] = []

    def devices(self) -> set[str]:
        """The device types of the calls logged (the first field of each entry)."""
        return {str(entry[0]) for entry in self.entries}


class Conditioned(nn.Module):
    """``forward(x, mask, temperature=1)``: ``net``'s logits of ``x * mask``, divided by ``temperature``.

    Every call's device and temperature are logged in ``log`` (a :class:`CallLog`).
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.log = CallLog()

    def forward(self, x: Tensor, mask: Tensor, temperature: float = 1.0) -> Tensor:
        self.log.entries.append((x.device.type, temperature))
        out: Tensor = self.net(x * mask) / temperature
        return out


class Bound(nn.Module):
    """``Conditioned`` with a mask and a temperature fixed: the reference without forward_args."""

    def __init__(self, model: Conditioned, mask: Tensor, temperature: float) -> None:
        super().__init__()
        self.model, self.mask, self.temperature = model, mask, temperature

    def forward(self, x: Tensor) -> Tensor:
        mask = self.mask.expand(len(x), *self.mask.shape[1:])
        out: Tensor = self.model(x, mask, temperature=self.temperature)
        return out
