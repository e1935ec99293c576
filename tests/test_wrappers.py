"""Wrappers (DataParallel, DistributedDataParallel, torch.compile): results keyed by the names the user gave.

``named_modules()`` of the object the user holds names the layers ``"module.layer4"`` (DataParallel,
DistributedDataParallel) or ``"_orig_mod.layer4"`` (torch.compile). Those names, and the wrapped model's
own (``"layer4"``), reach the same module and come back as given; list_layers and trace_shapes list the
wrapper's names. Each test also checks that the model (the wrapper and what it holds) is left as found.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
import torch
import torch.distributed as dist
from torch import Tensor, nn

import convlens as cl
from convlens.core.layers import resolve_layer
from invariants import assert_unchanged, snapshot


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.layer4 = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(6, 3)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.fc(self.layer4(self.stem(x)).mean(dim=(2, 3)))
        return out


def net() -> Net:
    torch.manual_seed(0)
    return Net().eval()


@pytest.fixture
def x() -> Tensor:
    return torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))


def reference(model: Net, x: Tensor) -> Tensor:
    out: Tensor = model.layer4(model.stem(x)).detach()
    return out


def data_parallel() -> tuple[nn.Module, Net]:
    inner = net()
    return nn.DataParallel(inner), inner  # no GPU here: DataParallel just calls the module


def compiled() -> tuple[nn.Module, Net]:
    inner = net()
    return cast("nn.Module", torch.compile(inner, backend="eager")), inner


WRAPPERS = {"DataParallel": (data_parallel, "module."), "torch.compile": (compiled, "_orig_mod.")}


@pytest.mark.parametrize("kind", sorted(WRAPPERS))
def test_a_tap_is_keyed_by_the_names_given(kind: str, x: Tensor) -> None:
    make, prefix = WRAPPERS[kind]
    wrapper, inner = make()
    before = snapshot(wrapper)
    acts = cl.LayerTap(wrapper, [f"{prefix}layer4", "stem", f"{prefix}fc"]).run(x)
    assert list(acts) == [f"{prefix}layer4", "stem", f"{prefix}fc"]
    torch.testing.assert_close(acts[f"{prefix}layer4"], reference(inner, x), rtol=0, atol=0)
    torch.testing.assert_close(acts["stem"], inner.stem(x).detach(), rtol=0, atol=0)
    assert_unchanged(wrapper, before)


@pytest.mark.parametrize("kind", sorted(WRAPPERS))
def test_both_names_of_one_layer_come_back_as_given(kind: str, x: Tensor) -> None:
    make, prefix = WRAPPERS[kind]
    wrapper, inner = make()
    tap = cl.LayerTap(wrapper, [f"{prefix}layer4", "layer4"])
    acts = tap.run(x)
    assert sorted(acts) == sorted([f"{prefix}layer4", "layer4"])
    assert acts["layer4"] is acts[f"{prefix}layer4"]  # one module, one record
    assert tap["layer4"] is tap[f"{prefix}layer4"] is tap[inner.layer4]


@pytest.mark.parametrize("kind", sorted(WRAPPERS))
def test_a_module_object_is_keyed_by_its_name_in_the_wrapper(kind: str, x: Tensor) -> None:
    make, prefix = WRAPPERS[kind]
    wrapper, inner = make()
    assert list(cl.LayerTap(wrapper, inner.layer4[1]).run(x)) == [f"{prefix}layer4.1"]
    names = dict(wrapper.named_modules())
    assert names[f"{prefix}layer4.1"] is inner.layer4[1]  # the key is a name the wrapper really has


@pytest.mark.parametrize("kind", sorted(WRAPPERS))
def test_gradients_are_keyed_by_the_names_given(kind: str, x: Tensor) -> None:
    make, prefix = WRAPPERS[kind]
    wrapper, inner = make()
    before = snapshot(wrapper)
    tap = cl.LayerTap(wrapper, f"{prefix}layer4", grads=True)
    tap.run(x)
    act = reference(inner, x).requires_grad_()
    expected = torch.autograd.grad(inner.fc(act.mean(dim=(2, 3))).sum(), act)[0]
    assert list(tap.gradients) == [f"{prefix}layer4"]
    torch.testing.assert_close(tap.gradients[f"{prefix}layer4"], expected)
    assert_unchanged(wrapper, before)


@pytest.mark.parametrize("kind", sorted(WRAPPERS))
def test_list_layers_gives_the_names_of_the_object_held(kind: str) -> None:
    make, prefix = WRAPPERS[kind]
    wrapper, _inner = make()
    names = [info.name for info in cl.list_layers(wrapper)]
    assert names == [n for n, _ in wrapper.named_modules() if n]
    assert prefix + "layer4.0" in names
    assert "layer4.0" not in names
    for name in names:  # every name listed resolves, to the module named_modules() gives
        assert resolve_layer(wrapper, name).module is dict(wrapper.named_modules())[name]


@pytest.mark.parametrize("kind", sorted(WRAPPERS))
def test_the_wrappers_own_name_is_the_whole_model(kind: str, x: Tensor) -> None:
    make, prefix = WRAPPERS[kind]
    wrapper, inner = make()
    acts = cl.LayerTap(wrapper, prefix[:-1]).run(x)
    torch.testing.assert_close(acts[prefix[:-1]], inner(x).detach(), rtol=0, atol=0)


@pytest.mark.parametrize("kind", sorted(WRAPPERS))
def test_trace_shapes_rows_are_the_wrappers_names(kind: str) -> None:
    make, prefix = WRAPPERS[kind]
    wrapper, inner = make()
    before = snapshot(wrapper)
    report = cl.trace_shapes(wrapper, (2, 3, 8, 8))
    plain = cl.trace_shapes(inner, (2, 3, 8, 8))
    assert report.names == [prefix + n for n in plain.names]
    assert report[f"{prefix}layer4.0"].output_shape == (2, 6, 8, 8)
    assert set(report.names) <= {n for n, _ in wrapper.named_modules()}
    assert_unchanged(wrapper, before)


@pytest.mark.parametrize("kind", sorted(WRAPPERS))
def test_a_wrappers_report_takes_the_wrapped_models_own_names(kind: str) -> None:
    make, prefix = WRAPPERS[kind]
    wrapper, inner = make()
    before = snapshot(wrapper)
    report = cl.trace_shapes(wrapper, (2, 3, 8, 8))
    plain = cl.trace_shapes(inner, (2, 3, 8, 8))
    assert report.prefix == prefix
    assert plain.prefix == ""
    for name in plain.names:  # every inner name reaches the row the wrapper's name does
        assert name in report
        assert prefix + name in report
        assert report[name] is report[prefix + name]
        assert report[name].output_shape == plain[name].output_shape
    assert "layer5" not in report
    assert prefix + "layer5" not in report
    with pytest.raises(
        cl.LayerNotFoundError, match=r"no layer 'layer5'\. Did you mean 'layer4\.1' or 'layer4\.0'\?"
    ):
        report["layer5"]
    assert_unchanged(wrapper, before)


def test_the_inner_names_reach_the_rows_of_a_wrappers_shape_error() -> None:
    wrapper = nn.DataParallel(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(10, 2)))
    with pytest.raises(cl.ShapeError, match=r"^module\.2 ") as caught:
        cl.trace_shapes(wrapper, (1, 3, 8, 8))  # the Linear gets 144 features, not 10
    report = caught.value.report
    assert isinstance(report, cl.ShapeReport)
    assert report.names == ["module.0", "module.1"]
    assert report["0"] is report["module.0"]
    assert "1" in report


def test_a_rejected_input_names_the_layer_as_the_wrapper_does() -> None:
    wrapper, _ = data_parallel()
    with pytest.raises(cl.ShapeError, match=r"^module\.stem expects 3 input channels, got 1"):
        cl.trace_shapes(wrapper, (2, 1, 8, 8))


def test_an_unknown_prefixed_name_suggests_the_prefixed_names() -> None:
    wrapper, _ = data_parallel()
    with pytest.raises(
        cl.LayerNotFoundError, match=r"no layer 'module\.layer5'\. Did you mean 'module\.layer4'\?"
    ):
        cl.LayerTap(wrapper, "module.layer5")


def test_a_compiled_model_runs_once_for_real_after_one_meta_probe(x: Tensor) -> None:
    wrapper, inner = compiled()
    devices: list[str] = []
    handle = inner.register_forward_pre_hook(lambda _m, args: devices.append(args[0].device.type))
    try:
        cl.LayerTap(wrapper, "_orig_mod.fc").run(x)
    finally:
        handle.remove()
    assert devices == ["meta", "cpu"]


@contextlib.contextmanager
def one_process_group(rendezvous: Path) -> Iterator[None]:
    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with gloo is needed")
    if dist.is_initialized():
        pytest.skip("a process group is already running")
    try:
        dist.init_process_group("gloo", init_method=rendezvous.as_uri(), rank=0, world_size=1)
    except Exception as err:  # noqa: BLE001 - any reason the group cannot start is a skip
        pytest.skip(f"a single-process gloo group cannot start here: {err}")
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_distributed_data_parallel_names(x: Tensor, tmp_path: Path) -> None:
    with one_process_group(tmp_path / "rendezvous"):
        inner = net()
        ddp = nn.parallel.DistributedDataParallel(inner)
        before = snapshot(ddp)
        acts = cl.LayerTap(ddp, ["module.layer4", "stem"]).run(x)
        assert list(acts) == ["module.layer4", "stem"]
        torch.testing.assert_close(acts["module.layer4"], reference(inner, x), rtol=0, atol=0)
        assert [i.name for i in cl.list_layers(ddp)] == [n for n, _ in ddp.named_modules() if n]
        assert cl.trace_shapes(ddp, (2, 3, 8, 8)).names[0] == "module.stem"
        assert_unchanged(ddp, before)
