"""convlens.core.inputs: forward arguments and the checks that a model can run, before any work."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import convlens as cl
from convlens.core.inputs import (
    NO_ARGS,
    ForwardArgs,
    as_forward_args,
    check_runnable,
    is_quantized,
    model_device,
)
from helpers import exact
from models import quantized_cnn


def test_as_forward_args_spells_positional_keyword_and_both() -> None:
    mask = torch.ones(2, 1, 4, 4)
    assert as_forward_args(None) is NO_ARGS
    assert as_forward_args((mask, 3)).args == (mask, 3)
    assert as_forward_args({"temperature": 2.0}).kwargs == {"temperature": 2.0}
    both = cl.ForwardArgs(mask, temperature=2.0)
    assert as_forward_args(both) is both
    assert both.call(lambda x, m, *, temperature: (x, m, temperature), "x") == ("x", mask, 2.0)


@pytest.mark.parametrize("value", [[1], torch.zeros(1), 3, "mask", {1: "a"}])
def test_as_forward_args_refuses_what_is_ambiguous(value: object) -> None:
    with pytest.raises(cl.InvalidTypeError, match=f"forward_args must be .*; got {type(value).__name__}"):
        as_forward_args(value)


def test_forward_args_are_immutable() -> None:
    args = ForwardArgs(1, k=2)
    args.kwargs["k"] = 5
    assert args.kwargs == {"k": 2}
    with pytest.raises(AttributeError):
        args.extra = 1  # type: ignore[attr-defined]


def test_take_indexes_only_tensors_with_the_batch_dimension() -> None:
    batch = torch.arange(4.0).reshape(4, 1)
    other = torch.arange(3.0)  # a tensor of another length passes unchanged
    args = ForwardArgs(batch, (batch, other), scale=other, mask={"m": batch}, n=7)
    rows = torch.tensor([3, 3, 0])
    taken = args.take(rows, batch=4)
    assert taken.args[0].flatten().tolist() == [3.0, 3.0, 0.0]
    assert taken.args[1][0].flatten().tolist() == [3.0, 3.0, 0.0]
    assert taken.args[1][1] is other
    assert taken.kwargs["scale"] is other
    assert taken.kwargs["mask"]["m"].flatten().tolist() == [3.0, 3.0, 0.0]
    assert taken.kwargs["n"] == 7
    assert args.take(slice(1, 3), batch=4).args[0].flatten().tolist() == [1.0, 2.0]
    assert NO_ARGS.take(rows, batch=4) is NO_ARGS


def test_tensors_and_repr_describe_the_arguments() -> None:
    mask = torch.ones(2, 3)
    args = ForwardArgs(mask, [mask, 1], t=2.0)
    assert [t is mask for t in args.tensors()] == [True, True]
    assert (
        repr(args) == "ForwardArgs(Tensor[2, 3], [tensor([[1., 1., 1.],\n        [1., 1., 1.]]), 1], t=2.0)"
    )
    assert ForwardArgs(mask) == ForwardArgs(mask)
    assert ForwardArgs(mask) != ForwardArgs(mask.clone())


def test_a_meta_model_is_refused_with_what_to_do() -> None:
    with torch.device("meta"):
        model = nn.Conv2d(3, 4, 3)
    with pytest.raises(
        cl.UnsupportedModelError, match=r"cannot run a model on the meta device.*load_state_dict"
    ):
        check_runnable(model, torch.zeros(1, 3, 8, 8), who="GradCAM")


def test_an_input_on_another_device_names_both_devices() -> None:
    model = nn.Conv2d(3, 4, 3)
    message = (
        "GradCAM: the model is on cpu but a tensor of the input is on meta. Move them to one device first, "
        "e.g. x.to('cpu') or model.to('meta')."
    )
    with pytest.raises(cl.DeviceMismatchError, match=exact(message)):
        check_runnable(model, torch.zeros(1, 3, 8, 8, device="meta"), who="GradCAM")
    with pytest.raises(cl.DeviceMismatchError, match="a tensor of forward_args is on meta"):
        check_runnable(
            model,
            torch.zeros(1, 3, 8, 8),
            who="GradCAM",
            forward_args=ForwardArgs(torch.zeros(1, device="meta")),
        )
    with pytest.raises(cl.DeviceMismatchError, match="the input is on meta"):  # a detector's list of images
        check_runnable(model, [torch.zeros(3, 8, 8), torch.zeros(3, 8, 8, device="meta")], who="GradCAM")
    assert issubclass(cl.DeviceMismatchError, ValueError)
    check_runnable(model, torch.zeros(1, 3, 8, 8), who="GradCAM")  # same device: fine


def test_a_model_on_several_devices_is_left_to_its_own_forward() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3, device="meta"))
    assert model_device(model) is None
    assert model_device(nn.Identity()) is None
    check_runnable(model, torch.zeros(1, 3, 8, 8), who="LayerTap")


def test_a_quantized_model_is_refused_only_where_gradients_are_needed() -> None:
    model = quantized_cnn()
    assert is_quantized(model)
    assert not is_quantized(nn.Conv2d(3, 4, 3))
    check_runnable(model, torch.zeros(1, 3, 8, 8), who="LayerTap")
    with pytest.raises(cl.UnsupportedModelError, match=r"GradCAM needs gradients .* Use the float model"):
        check_runnable(model, torch.zeros(1, 3, 8, 8), who="GradCAM", gradients=True)


def test_a_meta_model_on_meta_inputs_is_a_shapes_only_run() -> None:
    with torch.device("meta"):
        model = nn.Conv2d(3, 4, 3)
    check_runnable(model, torch.zeros(1, 3, 8, 8, device="meta"), who="LayerTap.run")
    with pytest.raises(cl.UnsupportedModelError, match="meta device"):
        check_runnable(model, torch.zeros(1, 3, 8, 8, device="meta"), who="GradCAM", gradients=True)


class _Tempered(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: Tensor, temperature: Tensor) -> Tensor:
        out: Tensor = self.conv(x) / temperature
        return out


def test_a_0_dim_cpu_tensor_passes_with_a_model_on_another_device() -> None:
    """PyTorch combines a 0-dim CPU tensor (a temperature) with tensors on any device: so does the check."""
    with torch.device("meta"):
        model = _Tempered()
    x = torch.zeros(1, 3, 8, 8, device="meta")
    temperature = torch.tensor(2.0)
    assert model(x, temperature).shape == (1, 4, 6, 6)  # PyTorch itself runs it
    check_runnable(model, x, who="LayerTap.run", forward_args=ForwardArgs(temperature))
    check_runnable(model, (x, temperature), who="LayerTap.run")
    with pytest.raises(cl.UnsupportedModelError, match="meta device"):  # a 1-dim CPU tensor is real data
        check_runnable(model, x, who="LayerTap.run", forward_args=ForwardArgs(torch.tensor([2.0])))
    on_cpu = _Tempered()  # only a CPU scalar is let through: a 0-dim tensor elsewhere is a mismatch
    with pytest.raises(cl.DeviceMismatchError, match="a tensor of forward_args is on meta"):
        check_runnable(
            on_cpu,
            torch.zeros(1, 3, 8, 8),
            who="GradCAM",
            forward_args=ForwardArgs(torch.tensor(2.0, device="meta")),
        )
