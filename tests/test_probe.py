"""The one probe (src/convlens/core/probe.py): what a meta pass learns, the failure policy, leaving models as found."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

import convlens as cl
from convlens.core.probe import (
    Prober,
    Seen,
    check_inputs,
    is_script,
    leaf_names,
    meta_forward,
    probe,
    require_hooks,
)
from convlens.core.recorder import PROBING
from convlens.core.values import tensors
from helpers import exact
from invariants import assert_unchanged, snapshot
from models import DictNet, InplaceNet, ReusedNet, seeded
from wild import jit


def _x(*shape: int, seed: int = 0) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


class MetaPasses:
    """Counts the forwards of a model that ran on meta tensors (a pre-hook of the user's own)."""

    def __init__(self, module: nn.Module) -> None:
        self.count = 0
        self.handle = module.register_forward_pre_hook(self._hook)

    def _hook(self, _module: nn.Module, args: tuple[Any, ...]) -> None:
        if args and isinstance(args[0], Tensor) and args[0].is_meta:
            self.count += 1

    def remove(self) -> None:
        self.handle.remove()


def real_rewrites(model: nn.Module, x: Tensor, names: list[str]) -> dict[str, list[bool]]:
    """Per name and call: did a later op of a REAL forward change the values that call returned?"""
    modules = dict(model.named_modules())
    kept: dict[str, list[tuple[Tensor, Tensor]]] = {name: [] for name in names}

    def hook_for(name: str) -> Any:
        def hook(_module: nn.Module, _args: tuple[Any, ...], output: Tensor) -> None:
            kept[name].append((output, output.detach().clone()))

        return hook

    handles = [modules[name].register_forward_hook(hook_for(name)) for name in names]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return {name: [not torch.equal(t, before) for t, before in calls] for name, calls in kept.items()}


# -- models ---------------------------------------------------------------------------------------


class Views(nn.Module):
    """A view of `a`'s output written in place; `d`'s output written by `+=`; `c`'s read out of place."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(2, 2, 1)
        self.b = nn.Conv2d(2, 2, 1)
        self.c = nn.Conv2d(2, 2, 1)
        self.d = nn.Conv2d(2, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        a = self.a(x)
        a.view(-1)[:3].mul_(3.0)  # through a view: the same storage and version counter
        b = self.b(a)
        c = self.c(b)
        d = self.d(torch.relu(c))  # out of place: c's output is left alone
        d += b
        out: Tensor = d
        return out


@dataclass
class Pair:
    name: str
    left: Tensor
    right: Tensor


class Outputs(nn.Module):
    """Returns a tuple, a dict or a dataclass of tensors, as ``kind`` says."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: Tensor) -> Any:
        y = self.conv(x)
        pooled = y.mean(dim=(2, 3))
        if self.kind == "tuple":
            return (y, pooled, "not a tensor")
        if self.kind == "dict":
            return {"maps": y, "pooled": pooled, "both": [y, pooled]}
        return Pair("p", y, pooled)


class ItemNet(nn.Module):
    """conv, then code that needs data (`.item()` or `if x.sum() > 0`), then conv2 and conv (again)."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.conv2 = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)
        if self.how == "item":
            y = y * y.abs().max().item()
        elif y.sum() > 0:
            y = -y
        out: Tensor = self.conv(self.conv2(y))
        return out


def linear_mismatch_net() -> nn.Sequential:
    """Conv2d(3, 4, 3) on 8x8 leaves 4*6*6 = 144 features for a Linear that wants 100."""
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(100, 2))


# -- a complete pass ------------------------------------------------------------------------------


def test_a_reused_module_reports_every_call_with_its_shape(reused_net: ReusedNet) -> None:
    p = probe(reused_net, (_x(2, 3, 8, 8),), watched={"relu": reused_net.relu, "fc": reused_net.fc})
    assert p.complete
    assert p.failure == ""
    assert [s.shape for s in p.seen["relu"]] == [(2, 4, 8, 8), (2, 4, 8, 8), (2, 5)]
    assert [s.shape for s in p.seen["fc"]] == [(2, 5)]
    assert p.count("relu") == 3
    assert p.count("fc") == 1
    assert p.count("conv1") is None  # not watched
    assert p.output_shape == (2, 5)
    assert p.output_tensors == 1
    assert p.input_shape == (2, 3, 8, 8)
    assert not p.rejected
    p.check()  # silent


def test_the_traced_calls_are_every_leaf_call_in_order(reused_net: ReusedNet) -> None:
    p = probe(reused_net, (_x(1, 3, 8, 8),), trace=True)
    names = [p.names[id(c.module)] for c in p.calls]
    assert names == ["conv1", "relu", "conv2", "relu", "fc", "relu"]
    assert [c.output_shape for c in p.calls] == [(1, 4, 8, 8)] * 4 + [(1, 5), (1, 5)]
    assert p.calls[4].input_shape == (1, 4)  # after the functional pool and flatten
    assert probe(reused_net, (_x(1, 3, 8, 8),)).calls == ()  # untraced when it succeeds


@pytest.mark.parametrize(("kind", "count"), [("tuple", 2), ("dict", 4), ("dataclass", 2)])
def test_output_shape_and_tensors_of_a_container_output(kind: str, count: int) -> None:
    model = Outputs(kind)
    real = model(_x(2, 3, 6, 6))
    p = probe(model, (_x(2, 3, 6, 6),))
    assert p.complete
    assert p.output_shape == (2, 4, 4, 4)
    assert p.output_tensors == count
    assert len(tensors(real)) == count


def test_output_of_a_dict_model(dict_net: DictNet) -> None:
    p = probe(dict_net, (_x(2, 2, 9),), watched={"gru": dict_net.gru})
    real = dict_net(_x(2, 2, 9))
    assert p.output_shape == tuple(real["out"].shape) == (2, 7, 4)
    assert p.output_tensors == 2
    assert p.seen["gru"] == (Seen((2, 7, 4), False),)  # the first tensor of the GRU's tuple


def test_a_watched_module_that_returns_no_tensor_has_no_shape() -> None:
    class Counter(nn.Module):
        def forward(self, x: Tensor) -> int:
            return x.dim()

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.counter = Counter()

        def forward(self, x: Tensor) -> Tensor:
            out: Tensor = x * self.counter(x)
            return out

    net = Net()
    p = probe(net, (_x(1, 2),), watched={"counter": net.counter})
    assert p.seen["counter"] == (Seen(None, False),)


# -- which outputs a later op rewrites --------------------------------------------------------------


def test_rewritten_matches_a_real_forward_on_alexnet_in_miniature(inplace_net: InplaceNet) -> None:
    inplace_net.eval()
    names = ["features.0", "features.1", "features.2", "features.3", "features.4", "bn", "classifier"]
    modules = dict(inplace_net.named_modules())
    x = _x(2, 3, 8, 8)
    p = probe(inplace_net, (x,), watched={n: modules[n] for n in names})
    expected = {
        "features.0": [True],  # ReLU(inplace=True) right after the conv
        "features.1": [False],  # the ReLU's own output is then max-pooled, out of place
        "features.2": [False],
        "features.3": [True],
        "features.4": [False],  # the identity of `out += identity` is read, not written
        "bn": [True],  # `out += identity` writes into the BatchNorm's output
        "classifier": [False],
    }
    assert real_rewrites(inplace_net, x, names) == expected
    assert {n: [s.rewritten for s in p.seen[n]] for n in names} == expected
    assert [p.rewritten(n, 0) for n in names] == [expected[n][0] for n in names]


def test_rewritten_through_a_view_and_by_plus_equals_and_not_by_out_of_place_ops() -> None:
    model = seeded(Views())
    x = _x(1, 2, 3, 3)
    names = ["a", "b", "c", "d"]
    p = probe(model, (x,), watched={n: getattr(model, n) for n in names})
    expected = {"a": [True], "b": [False], "c": [False], "d": [True]}
    assert real_rewrites(model, x, names) == expected
    assert {n: [s.rewritten for s in p.seen[n]] for n in names} == expected


def test_rewritten_per_call_of_a_reused_module() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 1)

        def forward(self, x: Tensor) -> Tensor:
            first = self.conv(x)
            second = self.conv(first)
            second.relu_()  # only the second call's output is rewritten
            out: Tensor = first + second
            return out

    model = Twice()
    seeded(model)
    x = _x(1, 2, 4, 4)
    p = probe(model, (x,), watched={"conv": model.conv})
    assert real_rewrites(model, x, ["conv"]) == {"conv": [False, True]}
    assert [s.rewritten for s in p.seen["conv"]] == [False, True]
    assert (p.rewritten("conv", 0), p.rewritten("conv", 1), p.rewritten("conv", 2)) == (False, True, True)


# -- the failure policy: a plain mismatch -----------------------------------------------------------


def test_a_channel_mismatch_raises_from_check_with_name_type_and_shape(reused_net: ReusedNet) -> None:
    p = probe(reused_net, (_x(2, 1, 8, 8),), watched={"relu": reused_net.relu})
    assert not p.complete
    assert p.rejected
    assert p.count("relu") == 0
    assert "conv1" in p.failure
    message = "conv1 expects 3 input channels, got 1 (Conv2d, input shape [2, 1, 8, 8])."
    with pytest.raises(cl.ShapeError, match=re.escape(message)) as info:
        p.check()
    assert isinstance(info.value, ValueError)
    assert info.value.report is not None
    assert len(info.value.report) == 0


def test_a_features_mismatch_later_in_the_model_lists_the_calls_before_it() -> None:
    net = linear_mismatch_net()
    p = probe(net, (_x(1, 3, 8, 8),), watched={"0": net[0], "3": net[3]})
    assert (p.count("0"), p.count("3")) == (1, 0)
    message = (
        "3 expects 100 input features, got 144 (Linear, input shape [1, 144]). "
        "The 3 layer calls traced before the failure are in err.report."
    )
    with pytest.raises(cl.ShapeError, match=exact(message)) as info:
        p.check()
    assert info.value.report is not None
    assert info.value.report.names == ["0", "1", "2"]
    assert isinstance(info.value.__cause__, RuntimeError)


def test_a_spatial_size_too_small_names_the_layer() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 5))
    p = probe(net, (_x(1, 3, 3, 3),))
    with pytest.raises(cl.ShapeError, match=r"^0 gets a spatial size of \[3, 3\], too small \(Conv2d, input"):
        p.check()


def test_a_failing_untraced_pass_is_run_once_more_traced() -> None:
    net = linear_mismatch_net()
    passes = MetaPasses(net)
    try:
        probe(net, (_x(1, 3, 8, 8),), watched={"0": net[0]})
        assert passes.count == 2  # untraced, then traced to say where and why
        probe(net, (_x(1, 3, 8, 8),), watched={"0": net[0]}, trace=True)
        assert passes.count == 3  # already traced: once
        probe(net, (_x(1, 3, 10, 10),), watched={"0": net[0]})  # 4*8*8 = 256 features: still rejected
        assert passes.count == 5
        ok = nn.Sequential(nn.Conv2d(3, 4, 3))
        ok_passes = MetaPasses(ok)
        probe(ok, (_x(1, 3, 8, 8),))
        assert ok_passes.count == 1  # a pass that succeeds runs once
        ok_passes.remove()
    finally:
        passes.remove()


def test_an_input_without_its_batch_dimension_says_so() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4, 2)

        def forward(self, x: Tensor) -> Tensor:
            out: Tensor = self.fc(self.conv(x).mean(dim=(2, 3)))
            return out

    p = probe(Net(), (_x(3, 8, 8),))
    assert not p.complete
    message = (
        "conv (Conv2d) got an input without a batch dimension, shape [3, 8, 8]; Net takes a batch "
        "[N, 3, H, W]: add one with x.unsqueeze(0). The 1 layer calls traced before the failure are in err.report."
    )
    with pytest.raises(cl.ShapeError, match=exact(message)):
        p.check()


def test_an_unbatched_conv1d_input_names_its_layout() -> None:
    net = nn.Sequential(nn.Conv1d(2, 3, 3), nn.Flatten(), nn.Linear(21, 2))  # batched: 3*7 = 21 features
    p = probe(net, (_x(2, 9),))
    with pytest.raises(
        cl.ShapeError, match=re.escape("takes a batch [N, 2, L]: add one with x.unsqueeze(0)")
    ):
        p.check()


# -- the failure policy: code that needs data ---------------------------------------------------------


@pytest.mark.parametrize("how", ["item", "if"])
def test_data_dependent_code_makes_the_probe_incomplete_and_silent(how: str) -> None:
    model = ItemNet(how)
    model(_x(1, 3, 5, 5))  # the real forward works
    p = probe(model, (_x(1, 3, 5, 5),), watched={"conv": model.conv, "conv2": model.conv2})
    assert not p.complete
    assert not p.rejected
    assert "meta" in p.failure
    p.check()  # silent: the entry points check on the real forward
    assert len(p.seen["conv"]) == 1  # its second call comes after the failure
    assert p.count("conv") is None  # a failure in the model's own code: the count is unknown
    assert p.seen["conv2"] == ()
    assert p.count("conv2") is None
    assert p.seen["conv"] == (Seen((1, 3, 5, 5), True),)
    assert p.rewritten("conv", 0)
    assert p.rewritten("conv", 1)
    assert p.rewritten("conv2", 0)
    assert p.output_shape is None
    assert p.output_tensors is None


def test_rewritten_is_true_for_everything_when_incomplete() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 1)
            self.conv2 = nn.Conv2d(2, 2, 1)

        def forward(self, x: Tensor) -> Tensor:
            y = self.conv(x)  # read out of place only: not rewritten in a complete pass
            z = self.conv2(y * 2)
            out: Tensor = z * z.sum().item()
            return out

    model = Net()
    p = probe(model, (_x(1, 2, 3, 3),), watched={"conv": model.conv, "conv2": model.conv2})
    assert not p.complete
    assert [s.rewritten for s in p.seen["conv"]] == [True]
    assert [s.rewritten for s in p.seen["conv2"]] == [True]


@pytest.mark.parametrize("fallback", ["another leaf", "no leaf"])
def test_a_leaf_error_caught_by_the_model_is_not_blamed_for_a_later_failure(fallback: str) -> None:
    class Fallback(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fast = nn.Conv2d(4, 3, 1)
            self.slow = nn.Conv2d(3, 3, 1)

        def forward(self, x: Tensor) -> Tensor:
            try:
                y = self.fast(x)
            except RuntimeError:  # the model handles it: 3 channels take another path
                y = self.slow(x) if fallback == "another leaf" else x
            out: Tensor = y * y.sum().item()
            return out

    model = Fallback()
    x = _x(1, 3, 4, 4)
    assert model(x).shape == (1, 3, 4, 4)  # the model accepts this input
    p = probe(model, (x,))
    assert not p.complete
    assert not p.rejected
    p.check()  # the failure is `.item()`, not a shape the model rejects


def test_check_stops_after_skips_a_rejection_after_the_awaited_calls() -> None:
    net = linear_mismatch_net()
    p = probe(net, (_x(1, 3, 8, 8),), watched={"0": net[0], "1": net[1], "3": net[3]})
    p.check(stops_after={"0": 1})
    p.check(stops_after={"0": 1, "1": 1})
    with pytest.raises(cl.ShapeError, match=r"^3 expects 100 input features"):
        p.check(stops_after={"0": 1, "3": 1})  # it waits for the layer that rejects
    with pytest.raises(cl.ShapeError, match=r"^3 expects 100 input features"):
        p.check(stops_after={"0": 2})  # a second call that never came
    with pytest.raises(cl.ShapeError, match=r"^3 expects 100 input features"):
        p.check(stops_after={})


# -- bad inputs, before any pass --------------------------------------------------------------------


def test_numpy_and_pil_inputs_are_refused() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3))
    passes = MetaPasses(net)
    try:
        array = np.zeros((1, 3, 8, 8), dtype=np.float32)
        numpy_message = (
            "the model's input must be a torch tensor; got a numpy array of shape (1, 3, 8, 8) (float32). "
            "Convert it with torch.from_numpy(x) (or torch.as_tensor(x, device=...))."
        )
        with pytest.raises(cl.InvalidTypeError, match=exact(numpy_message)) as info:
            probe(net, (array,))
        assert isinstance(info.value, TypeError)
        with pytest.raises(cl.InvalidTypeError, match="numpy array"):
            check_inputs((), {"x": array})
        pil_message = (
            "the model's input must be a torch tensor; got a PIL image (Image). "
            "Turn it into a normalized batch with convlens.models.images.preprocess(image)."
        )
        with pytest.raises(cl.InvalidTypeError, match=exact(pil_message)):
            probe(net, (Image.new("RGB", (8, 8)),))
        assert passes.count == 0
    finally:
        passes.remove()
    check_inputs((torch.zeros(1), 3, "text"), {"flag": True})  # anything else passes


def test_inputs_that_do_not_bind_to_forward_are_refused_before_any_pass() -> None:
    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x: Tensor, *, scale: float) -> Tensor:
            out: Tensor = self.conv(x) * scale
            return out

    model = Two()
    passes = MetaPasses(model.conv)
    try:
        with pytest.raises(
            cl.InvalidTypeError,
            match=re.escape(
                "Two.forward(x: 'Tensor', *, scale: 'float') -> 'Tensor' cannot take the inputs given (missing a required argument: 'scale'); pass every input forward requires, positional and keyword."
            ),
        ):
            probe(model, (_x(1, 3, 8, 8),))
        with pytest.raises(cl.InvalidTypeError, match=re.escape("(too many positional arguments)")):
            probe(model, (_x(1, 3, 8, 8), 2.0), {"scale": 1.0})
        with pytest.raises(cl.InvalidTypeError, match=re.escape("pass every input forward requires")):
            probe(model, (), {"scale": 1.0})
        assert passes.count == 0
        assert probe(model, (_x(1, 3, 8, 8),), {"scale": 2.0}).output_shape == (1, 4, 6, 6)
        assert passes.count == 1
    finally:
        passes.remove()


# -- the model is left as found ------------------------------------------------------------------------


class Stateful(nn.Module):
    """Writes plain attributes during its forward, then fails as ``fail`` says (or not)."""

    def __init__(self, fail: str) -> None:
        super().__init__()
        self.fail = fail
        self.conv = nn.Conv2d(3, 4, 1)
        self.bad = nn.Conv2d(5, 4, 1)
        self.cache = torch.zeros(3)
        self.first = torch.ones(2)
        self.history: list[Any] = [self.first]
        self.table: dict[str, Any] = {"k": self.first}

    def forward(self, x: Tensor) -> Tensor:
        y: Tensor = self.conv(x)
        self.brand_new = y
        self.cache = y
        self.history.append(y)
        self.table["k"] = y
        self.table["extra"] = y
        if self.fail == "mismatch":
            self.bad(y)
        elif self.fail == "data":
            y = y * y.sum().item()
        return y


def _meta_tensors_in(value: Any) -> Iterator[Tensor]:
    if isinstance(value, Tensor) and value.is_meta:
        yield value
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _meta_tensors_in(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _meta_tensors_in(item)


@pytest.mark.parametrize("fail", ["none", "mismatch", "data"])
def test_plain_attributes_written_during_the_forward_are_restored(fail: str) -> None:
    model = Stateful(fail)
    cache, first, history, table = model.cache, model.first, model.history, model.table
    before = snapshot(model)
    p = probe(model, (_x(1, 3, 4, 4),), watched={"conv": model.conv})
    assert p.complete == (fail == "none")
    assert p.rejected == (fail == "mismatch")
    assert "brand_new" not in vars(model)
    assert model.cache is cache
    assert torch.equal(model.cache, torch.zeros(3))
    assert model.history is history
    assert len(history) == 1
    assert history[0] is first
    assert model.table is table
    assert list(table) == ["k"]
    assert table["k"] is first
    for module in model.modules():
        assert not [t for v in vars(module).values() for t in _meta_tensors_in(v)]
    assert_unchanged(model, before)


@pytest.mark.parametrize("fail", ["none", "mismatch", "data"])
def test_hooks_parameters_buffers_and_flags_are_left_as_found(fail: str) -> None:
    model = Stateful(fail)
    model.bn = nn.BatchNorm2d(4)
    model.train()
    model.bn.eval()
    model.conv.weight.requires_grad_(False)
    own = model.conv.register_forward_hook(lambda _m, _a, _o: None)
    try:
        before = snapshot(model)
        probe(model, (_x(1, 3, 4, 4),), watched={"conv": model.conv, "bad": model.bad})
        probe(model, (_x(1, 3, 4, 4),), watched={"conv": model.conv}, training=True)
        probe(model, (_x(1, 3, 4, 4),), watched={"conv": model.conv}, training=None)
        assert_unchanged(model, before)
        assert model.training
        assert not model.bn.training
        assert len(model.conv._forward_hooks) == 1
    finally:
        own.remove()


def test_a_buffer_registered_or_reassigned_during_the_forward_is_restored() -> None:
    class Buffers(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 1)
            self.register_buffer("last", torch.zeros(1))

        def forward(self, x: Tensor) -> Tensor:
            y: Tensor = self.conv(x)
            self.last = y  # a registered buffer: nn.Module.__setattr__ puts it into _buffers
            self.conv.register_buffer("anchors", y)  # conv had no buffer before: a new store entry
            return y

    model = Buffers()
    last = model.last
    before = snapshot(model)
    probe(model, (_x(1, 1, 2, 2),))
    assert model.last is last
    assert dict(model.conv.named_buffers()) == {}, "a meta buffer was left on the model"
    assert_unchanged(model, before)


class Abort(BaseException):
    """Not an Exception: the probe must not swallow it, and must clean up anyway."""


def test_probing_is_set_during_the_pass_and_reset_after_it_even_when_it_raises() -> None:
    seen: list[object | None] = []

    class Net(nn.Module):
        def __init__(self, error: BaseException | None) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 1)
            self.error = error

        def forward(self, x: Tensor) -> Tensor:
            seen.append(PROBING.get())
            if self.error is not None:
                raise self.error
            out: Tensor = self.conv(x)
            return out

    assert PROBING.get() is None
    probe(Net(None), (_x(1, 1, 2, 2),))
    assert PROBING.get() is None
    assert seen[-1] is not None  # the pass ran marked
    probe(Net(RuntimeError("inside")), (_x(1, 1, 2, 2),))
    assert PROBING.get() is None
    model = Net(Abort())
    before = snapshot(model)
    with pytest.raises(Abort):
        probe(model, (_x(1, 1, 2, 2),))
    assert PROBING.get() is None
    assert_unchanged(model, before)


def test_a_user_hook_that_reads_values_makes_the_probe_incomplete_not_raise() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3))
    values: list[float] = []
    handle = net[1].register_forward_hook(lambda _m, _a, out: values.append(out.sum().item()))
    try:
        before = snapshot(net)
        p = probe(net, (_x(1, 3, 8, 8),), watched={"0": net[0], "2": net[2]})
        assert not p.complete
        assert not p.rejected
        p.check()
        assert len(p.seen["0"]) == 1
        assert p.seen["2"] == ()
        assert p.count("0") is None  # not a leaf that failed: the count is unknown, nothing is trusted
        assert values == []
        assert_unchanged(net, before)
        net(_x(1, 3, 8, 8))
        assert len(values) == 1  # the user's hook still works on a real forward
    finally:
        handle.remove()


def test_meta_forward_returns_meta_and_keeps_tied_weights_tied() -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(3, 3)
            self.b = nn.Linear(3, 3)
            self.b.weight = self.a.weight

        def forward(self, x: Tensor) -> Tensor:
            assert self.a.weight is self.b.weight
            assert self.a.weight.is_meta
            out: Tensor = self.b(self.a(x))
            return out

    model = Tied()
    weight = model.a.weight
    out = meta_forward(model, (torch.ones(2, 3),))
    assert out.is_meta
    assert out.shape == (2, 3)
    assert model.a.weight is weight
    assert model.b.weight is weight
    assert not weight.is_meta


# -- Prober ------------------------------------------------------------------------------------------


def test_prober_caches_per_signature_and_mode() -> None:
    class ModeShaped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.drop = nn.Dropout(0.5)

        def forward(self, x: Tensor) -> Tensor:
            y: Tensor = self.drop(self.conv(x))
            return y if self.training else y.flatten(1)

    model = ModeShaped().eval()
    prober = Prober(model, {"conv": model.conv})
    first = prober((_x(1, 3, 6, 6, seed=0),))
    assert prober((_x(1, 3, 6, 6, seed=1),)) is first  # other values, same signature
    assert prober((_x(1, 3, 6, 6),), training=None) is first  # as the model is: eval
    assert first.output_shape == (1, 64)
    other = prober((_x(1, 3, 7, 7),))
    assert other is not first
    assert other.seen["conv"] == (Seen((1, 4, 5, 5), False),)
    assert prober((_x(1, 3, 6, 6).double(),)) is not first
    train = prober((_x(1, 3, 6, 6),), training=True)
    assert train is not first
    assert train.output_shape == (1, 4, 4, 4)  # the pass really ran in training mode
    assert prober((_x(1, 3, 6, 6),), training=True) is train
    assert not model.training


def test_probing_touches_no_global_rng() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Dropout(0.5), nn.Dropout2d(0.5))
    torch.manual_seed(123)
    state = torch.get_rng_state()
    Prober(model)((_x(2, 3, 6, 6),), training=True)
    probe(model, (_x(2, 3, 6, 6),), training=True, trace=True)
    assert torch.equal(torch.get_rng_state(), state)


# -- TorchScript ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["script", "trace"])
def test_torchscript_cannot_be_probed_and_is_refused_where_hooks_are_needed(how: str) -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    x = _x(1, 3, 6, 6)
    jitted = jit(how, model, x)
    assert is_script(jitted)
    assert not is_script(model)
    p = probe(jitted, (x,), watched={})
    assert not p.complete
    assert p.failure == "TorchScript cannot be probed"
    assert p.input_shape == (1, 3, 6, 6)
    p.check()
    assert p.rewritten("0", 0)
    with pytest.raises(
        cl.UnsupportedModelError, match=r"^LayerTap cannot work on \w+, a TorchScript module"
    ) as info:
        require_hooks(jitted, "LayerTap")
    assert isinstance(info.value, TypeError)
    assert isinstance(info.value, cl.ConvlensError)
    require_hooks(model, "LayerTap")  # a plain module passes


def test_leaf_names_are_the_childless_modules(reused_net: ReusedNet) -> None:
    assert sorted(leaf_names(reused_net).values()) == ["conv1", "conv2", "fc", "relu"]
    assert leaf_names(reused_net)[id(reused_net.relu)] == "relu"
    conv = nn.Conv2d(1, 1, 1)
    assert leaf_names(conv) == {id(conv): ""}


def test_an_edited_model_is_probed_again_so_copies_follow_the_edit() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=False), nn.Conv2d(4, 2, 3))
    x = torch.randn(1, 3, 8, 8)
    tap = cl.LayerTap(net, ["0", "2"])
    tap.run(x)
    assert tap.copied == frozenset()
    relu: nn.ReLU = net[1]  # type: ignore[assignment]
    relu.inplace = True  # the user edits the model between runs
    acts = tap.run(x)
    with torch.no_grad():
        expected = net[0](x)
    assert bool((expected < 0).any())
    torch.testing.assert_close(acts["0"], expected, rtol=0, atol=0)
    assert tap.copied == {"0"}


def test_nested_containers_deques_and_plain_tensors_are_left_as_found() -> None:
    import collections

    class Keeps(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 3)
            self.recent: collections.deque[Tensor] = collections.deque(maxlen=4)
            self.history: dict[str, list[Tensor]] = {"feats": []}
            self.calls = torch.zeros(())

        def forward(self, x: Tensor) -> Tensor:
            y: Tensor = self.conv(x)
            self.recent.append(y.detach())
            self.history["feats"].append(y.detach())
            self.calls += 1
            return y

    model = Keeps()
    model(torch.rand(1, 3, 8, 8))
    recent, feats, calls = list(model.recent), list(model.history["feats"]), model.calls
    probe(model, (torch.rand(1, 3, 8, 8),))
    assert [t is s for t, s in zip(model.recent, recent, strict=True)] == [True]
    assert [t is s for t, s in zip(model.history["feats"], feats, strict=True)] == [True]
    assert model.calls is calls
    assert float(model.calls) == 1.0  # the in-place += ran on a meta twin, not on the real tensor


def test_a_numpy_array_inside_a_list_of_inputs_is_refused() -> None:
    net = nn.Sequential(nn.Conv2d(3, 2, 3))
    with pytest.raises(cl.InvalidTypeError, match=r"numpy array.*torch\.from_numpy"):
        probe(net, ([np.zeros((3, 8, 8), np.float32)],))


# -- one probe per model and input signature, across fresh objects ---------------------------------


class ProbeCount:
    """Counts the meta passes the Probers run (a spy on the module's ``probe``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from convlens.core import probe as probe_module

        self.count = 0
        real = probe_module.probe

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(probe_module, "probe", counted)


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.Conv2d(4, 2, 3)).eval()


def test_fresh_taps_and_maximizers_on_one_model_share_one_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    model, x = _net(), _x(2, 3, 8, 8)
    passes = ProbeCount(monkeypatch)
    before = snapshot(model)
    attributes = set(vars(model))
    for _ in range(3):  # a fresh tap per forward, as in a loop
        with cl.LayerTap(model, ["0", "2"]) as tap, torch.no_grad():
            model(x)
        assert tap.copied == {"0"}  # what the shared probe says: the ReLU rewrites conv 0's output
    assert passes.count == 1
    for _ in range(3):
        assert cl.LayerTap(model, ["0", "2"]).run(_x(2, 3, 8, 8, seed=1))["0"].shape == (2, 4, 6, 6)
    assert passes.count == 1  # eval mode, same layers, same signature: the same probe
    cl.LayerTap(model, ["0", "2"]).run(_x(1, 3, 8, 8))  # another signature: probed once
    cl.LayerTap(model, ["0", "2"]).run(_x(1, 3, 8, 8))
    assert passes.count == 2
    cl.LayerTap(model, ["2"]).run(x)  # other layers watched: probed once
    assert passes.count == 3
    objective = cl.objectives.channel("2", 1)
    for _ in range(2):
        cl.ActivationMaximizer(model, objective, input_shape=(1, 3, 8, 8), steps=1)
    assert passes.count == 4
    assert_unchanged(model, before)
    assert set(vars(model)) == attributes  # nothing written onto the model


@pytest.mark.parametrize(
    "edit", ["replace a layer", "toggle training", "add a user hook", "change a setting"]
)
def test_an_edit_between_fresh_taps_is_probed_again(monkeypatch: pytest.MonkeyPatch, edit: str) -> None:
    model, x = _net(), _x(2, 3, 8, 8)
    passes = ProbeCount(monkeypatch)

    def tapped() -> LayerTapResult:
        with cl.LayerTap(model, ["0", "2"]) as tap, torch.no_grad():
            model(x)
        return LayerTapResult(tap.copied, {k: v.shape for k, v in tap.activations.items()})

    first = tapped()
    assert tapped() == first
    assert passes.count == 1
    if edit == "replace a layer":
        model[1] = nn.ReLU()  # no longer in place: conv 0's output need not be copied
    elif edit == "toggle training":
        model.train()
    elif edit == "add a user hook":
        model[2].register_forward_hook(lambda _m, _i, out: out[:, :1])
    else:
        relu = model[1]
        assert isinstance(relu, nn.ReLU)
        relu.inplace = False
    again = tapped()
    assert passes.count == 2
    if edit in ("replace a layer", "change a setting"):
        assert again.copied == frozenset()
    if edit == "add a user hook":
        assert again.shapes["2"] == (2, 1, 4, 4)
    assert tapped() == again
    assert passes.count == 2


@dataclass(frozen=True)
class LayerTapResult:
    copied: frozenset[str]
    shapes: dict[str, tuple[int, ...]]


def test_the_shared_probes_keep_no_model_alive() -> None:
    import gc
    import weakref

    model, x = _net(), _x(2, 3, 8, 8)
    cl.LayerTap(model, ["0"]).run(x)
    with cl.LayerTap(model, ["2"]), torch.no_grad():
        model(x)
    cl.ActivationMaximizer(model, cl.objectives.channel("2", 0), input_shape=(1, 3, 8, 8), steps=1)
    with pytest.raises(cl.ShapeError):  # a rejected input: its probe names the model
        cl.LayerTap(model, ["0"]).run(_x(2, 1, 8, 8))
    gone = weakref.ref(model)
    del model
    gc.collect()
    assert gone() is None


def test_the_shared_probes_are_bounded_per_model(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _net()
    passes = ProbeCount(monkeypatch)
    for size in range(8, 40):  # 32 signatures: more than a model keeps
        Prober(model, {"0": model[0]})((_x(1, 3, size, size),))
    assert passes.count == 32
    Prober(model, {"0": model[0]})((_x(1, 3, 39, 39),))  # the latest is kept
    assert passes.count == 32
    Prober(model, {"0": model[0]})((_x(1, 3, 8, 8),))  # the oldest went
    assert passes.count == 33


def test_inputs_with_objects_of_the_user_are_not_shared(monkeypatch: pytest.MonkeyPatch) -> None:
    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 3)

        def forward(self, x: Tensor, scale: object = None) -> Tensor:
            out: Tensor = self.conv(x)
            return out

    class Setting:  # hashable by identity: a key holding it would keep it alive
        pass

    model, x = Scaled(), _x(1, 3, 6, 6)
    passes = ProbeCount(monkeypatch)
    Prober(model)((x,), {"scale": Setting()})
    Prober(model)((x,), {"scale": Setting()})
    assert passes.count == 2
    Prober(model)((x,), {"scale": 2.0})
    Prober(model)((x,), {"scale": 2.0})
    assert passes.count == 3
