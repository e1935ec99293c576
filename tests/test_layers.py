from __future__ import annotations

import pytest
import torch
from torch import nn

import convlens as cl
from convlens.core.layers import resolve_layers, split_call
from models import InplaceNet, ReusedNet


def test_list_layers_order_types_and_params(inplace_net: InplaceNet) -> None:
    infos = cl.list_layers(inplace_net)
    names = [name for name, _ in inplace_net.named_modules() if name]
    assert [i.name for i in infos] == names
    by_name = {i.name: i for i in infos}
    assert by_name["features"].type == "Sequential"
    assert not by_name["features"].leaf
    assert by_name["features.0"].leaf
    assert by_name["features.0"].module is inplace_net.features[0]
    assert by_name["features.0"].params == 6 * 3 * 3 * 3 + 6
    assert by_name["features"].params == sum(p.numel() for p in inplace_net.features.parameters())


def test_list_layers_rejects_non_module() -> None:
    with pytest.raises(cl.InvalidTypeError, match=r"must be a torch\.nn\.Module; got list"):
        cl.list_layers([1, 2])  # type: ignore[arg-type]


def test_resolve_by_name_and_by_module(inplace_net: InplaceNet) -> None:
    conv = inplace_net.features[3]
    assert cl.resolve_layer(inplace_net, "features.3").module is conv
    assert cl.resolve_layer(inplace_net, conv).name == "features.3"


def test_unknown_name_lists_nearest_and_how_to_list() -> None:
    model = nn.Sequential(*[nn.Conv2d(3, 3, 1) for _ in range(13)])
    outer = nn.Sequential()
    outer.add_module("features", model)
    with pytest.raises(cl.LayerNotFoundError) as info:
        cl.resolve_layer(outer, "features.13")
    message = str(info.value)
    assert "Sequential has no layer 'features.13'" in message
    assert "Did you mean 'features.12'" in message
    assert "Call convlens.list_layers(model) to see all 14." in message
    assert isinstance(info.value, KeyError)


def test_foreign_module_is_not_found(inplace_net: InplaceNet) -> None:
    with pytest.raises(cl.LayerNotFoundError, match="Conv2d module given as layer is not a submodule"):
        cl.resolve_layer(inplace_net, nn.Conv2d(1, 1, 1))


def test_wrong_layer_type(inplace_net: InplaceNet) -> None:
    with pytest.raises(cl.InvalidTypeError, match="got int 3"):
        cl.resolve_layer(inplace_net, 3)  # type: ignore[arg-type]


def test_call_suffix(reused_net: ReusedNet) -> None:
    ref = cl.resolve_layer(reused_net, "relu#2")
    assert (ref.name, ref.call, ref.key) == ("relu", 2, "relu#2")
    assert split_call("a.b#x") == ("a.b#x", None)


def test_alias_resolves_to_canonical_name() -> None:
    relu = nn.ReLU()
    net = nn.Module()
    net.add_module("first", relu)
    net.add_module("second", relu)
    assert cl.resolve_layer(net, "second").name == "first"


def test_resolve_layers_empty_and_dedup(inplace_net: InplaceNet) -> None:
    with pytest.raises(cl.InvalidArgumentError, match="layers is empty"):
        resolve_layers(inplace_net, [])
    refs = resolve_layers(inplace_net, ["features.0", inplace_net.features[0], "bn"])
    assert [r.key for r in refs] == ["features.0", "bn"]
    assert isinstance(cl.InvalidArgumentError("x"), ValueError)


def test_list_layers_leaves_model_unchanged(inplace_net: InplaceNet) -> None:
    from invariants import assert_unchanged, snapshot

    before = snapshot(inplace_net)
    cl.list_layers(inplace_net)
    cl.resolve_layer(inplace_net, "bn")
    assert_unchanged(inplace_net, before)
    assert torch.is_grad_enabled()


def test_layer_info_unpacks(inplace_net: InplaceNet) -> None:
    name, type_, module, leaf, params = cl.list_layers(inplace_net)[1]
    assert (name, type_, module, leaf, params) == ("features.0", "Conv2d", inplace_net.features[0], True, 168)
