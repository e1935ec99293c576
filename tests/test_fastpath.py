"""The probe's meta-device fast path (src/convlens/core/fastpath.py).

What :class:`SkipShapePreserving` answers itself on meta tensors (shape-preserving functions, a little
shape arithmetic) must give what running them gives: the same shape, dtype and device, the same
tensor back for an in-place call and a fresh one otherwise, and the same version-counter moves (the
probe reads them to see which tapped outputs a later in-place op rewrites). What it does not know, an
input a real function would reject, and any tensor that is not on meta, run normally.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

from convlens.core.fastpath import SkipShapePreserving


class Seen(TorchFunctionMode):
    """Records every function that reaches it: below the fast path, only what the fast path let through."""

    def __init__(self) -> None:
        super().__init__()
        self.funcs: list[Any] = []

    def __torch_function__(
        self, func: Any, types: Any, args: Any = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        self.funcs.append(func)
        return func(*args, **(kwargs or {}))


@dataclass(frozen=True)
class Case:
    """``make(device)`` returns ``(call, x)``: ``call()`` runs the function once; ``x`` is its input."""

    func: Any  # the function the fast path sees first
    make: Callable[[str], tuple[Callable[[], Tensor], Tensor]]
    inplace: bool = False


def _x(device: str, *shape: int) -> Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(0)).to(device)


def _unary(func: Callable[..., Tensor], *args: Any, shape: tuple[int, ...] = (2, 4, 5, 5), **kw: Any) -> Any:
    def make(device: str) -> tuple[Callable[[], Tensor], Tensor]:
        x = _x(device, *shape)
        return (lambda: func(x, *args, **kw)), x

    return make


def _with_params(func: Callable[..., Tensor], *param_shapes: tuple[int, ...], **kw: Any) -> Any:
    def make(device: str) -> tuple[Callable[[], Tensor], Tensor]:
        x, params = _x(device, 2, 4, 5, 5), [_x(device, *s) + 0.5 for s in param_shapes]
        return (lambda: func(x, *params, **kw)), x

    return make


def _binary(func: Callable[..., Tensor]) -> Any:
    def make(device: str) -> tuple[Callable[[], Tensor], Tensor]:
        x, y = _x(device, 2, 4, 5, 5), _x(device, 2, 4, 5, 5)
        return (lambda: func(x, y)), x

    return make


def _iadd(device: str) -> tuple[Callable[[], Tensor], Tensor]:
    x = _x(device, 2, 4, 5, 5)

    def call() -> Tensor:
        y = x
        y += 1.0
        return y

    return call, x


C4 = (4,)
SKIPPED = {
    "relu": Case(F.relu, _unary(F.relu)),
    "relu inplace": Case(F.relu, _unary(F.relu, inplace=True), inplace=True),
    "torch.relu_": Case(torch.relu_, _unary(torch.relu_), inplace=True),
    "Tensor.relu_": Case(Tensor.relu_, _unary(Tensor.relu_), inplace=True),
    "leaky_relu inplace positional": Case(F.leaky_relu, _unary(F.leaky_relu, 0.1, True), inplace=True),
    "hardtanh_": Case(F.hardtanh_, _unary(F.hardtanh_), inplace=True),
    "gelu": Case(F.gelu, _unary(F.gelu)),
    "sigmoid": Case(torch.sigmoid, _unary(torch.sigmoid)),
    "batch_norm eval": Case(F.batch_norm, _with_params(F.batch_norm, C4, C4, C4, C4, training=False)),
    "instance_norm": Case(F.instance_norm, _with_params(F.instance_norm)),
    "layer_norm": Case(F.layer_norm, _unary(F.layer_norm, (5, 5))),
    "group_norm": Case(F.group_norm, _unary(lambda x: F.group_norm(x, 2, torch.ones(4, device=x.device)))),
    "local_response_norm": Case(F.local_response_norm, _unary(F.local_response_norm, 2)),
    "log_softmax": Case(F.log_softmax, _unary(F.log_softmax, 1)),
    "prelu": Case(F.prelu, _with_params(F.prelu, C4)),
    "conv2d": Case(torch.conv2d, _with_params(torch.conv2d, (6, 4, 3, 3), (6,), stride=2, padding=1)),
    "conv2d same": Case(torch.conv2d, _with_params(torch.conv2d, (6, 2, 3, 3), padding="same", groups=2)),
    "conv1d": Case(
        torch.conv1d, _unary(lambda x: torch.conv1d(x, torch.ones(3, 4, 2, device=x.device)), shape=(2, 4, 7))
    ),
    "linear": Case(F.linear, _unary(lambda x: F.linear(x, torch.ones(3, 5, device=x.device)))),
    "adaptive_avg_pool2d": Case(F.adaptive_avg_pool2d, _unary(F.adaptive_avg_pool2d, (1, None))),
    "add": Case(Tensor.__add__, _binary(Tensor.__add__)),
    "mul": Case(torch.mul, _binary(torch.mul)),
    "add_": Case(Tensor.add_, _binary(Tensor.add_), inplace=True),
    "+= scalar": Case(Tensor.__iadd__, _iadd, inplace=True),
}
# conv1d and linear build their weight inside the call: the fast path sees F.linear / torch.conv1d.


def _call(call: Callable[[], Tensor], *, fast: bool) -> Tensor:
    if not fast:
        return call()
    with SkipShapePreserving():
        return call()


def _run(case: Case, device: str, *, fast: bool) -> tuple[Tensor, Tensor, int, list[Any]]:
    """``(output, input, version moves of the input, functions that ran below the fast path)``."""
    call, x = case.make(device)
    before = x._version
    seen = Seen()
    with seen:
        out = _call(call, fast=fast)
    return out, x, x._version - before, seen.funcs


@pytest.mark.parametrize("name", list(SKIPPED))
def test_what_it_skips_gives_what_running_it_gives(name: str) -> None:
    case = SKIPPED[name]
    fast, fast_x, fast_moves, below = _run(case, "meta", fast=True)
    ran, ran_x, ran_moves, _ = _run(case, "meta", fast=False)
    real, _, real_moves, _ = _run(case, "cpu", fast=False)
    assert case.func not in below, f"{name} was not skipped"
    assert fast.is_meta
    assert tuple(fast.shape) == tuple(ran.shape) == tuple(real.shape)
    assert fast.dtype == ran.dtype == real.dtype
    assert (fast is fast_x) == (ran is ran_x) == case.inplace
    assert fast_moves == ran_moves == real_moves, "version counters move as the real op moves them"
    if not case.inplace:
        assert fast._version == 0, "an out-of-place answer has its own version counter"


REJECTED = {
    "batch_norm, wrong channels": _with_params(F.batch_norm, (3,), (3,), training=False),
    "group_norm, groups do not divide": _unary(lambda x: F.group_norm(x, 3, torch.ones(4, device=x.device))),
    "layer_norm, wrong shape": _unary(F.layer_norm, (4, 4)),
    "conv2d, wrong channels": _with_params(torch.conv2d, (6, 3, 3, 3)),
    "conv2d, kernel larger than the input": _with_params(torch.conv2d, (6, 4, 7, 7)),
    "linear, wrong features": _unary(lambda x: F.linear(x, torch.ones(3, 4, device=x.device))),
    "prelu, wrong channels": _with_params(F.prelu, (3,)),
}


@pytest.mark.parametrize("name", list(REJECTED))
def test_an_input_the_real_function_rejects_still_raises(name: str) -> None:
    errors = []
    for fast in (True, False):
        call, _ = REJECTED[name]("meta")
        with pytest.raises(RuntimeError) as info:
            _call(call, fast=fast)
        errors.append(type(info.value))
    assert errors[0] is errors[1]


UNKNOWN = {
    "max_pool2d": (torch.max_pool2d, _unary(torch.max_pool2d, 2)),
    "flip": (torch.flip, _unary(torch.flip, [0])),
    "batch_norm in training": (F.batch_norm, _with_params(F.batch_norm, C4, C4, training=True)),
    "matmul": (torch.matmul, _unary(lambda x: torch.matmul(x, x))),
}


@pytest.mark.parametrize("name", list(UNKNOWN))
def test_what_it_does_not_know_runs_normally(name: str) -> None:
    func, make = UNKNOWN[name]
    case = Case(func, make)
    fast, _, fast_moves, below = _run(case, "meta", fast=True)
    ran, _, ran_moves, _ = _run(case, "meta", fast=False)
    assert func in below, f"{name} did not reach torch"
    assert tuple(fast.shape) == tuple(ran.shape)
    assert fast_moves == ran_moves


@pytest.mark.parametrize("name", ["relu inplace", "batch_norm eval", "conv2d", "add_"])
def test_tensors_off_meta_run_normally(name: str) -> None:
    case = SKIPPED[name]
    fast, fast_x, fast_moves, below = _run(case, "cpu", fast=True)
    real, _, real_moves, _ = _run(case, "cpu", fast=False)
    assert case.func in below, f"{name} was answered on the CPU"
    assert torch.equal(fast, real)  # the same kernel on the same values: bit for bit
    assert fast_moves == real_moves
    assert (fast is fast_x) == case.inplace
