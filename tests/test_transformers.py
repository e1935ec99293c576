"""Transformers and channels-last stages: reshape="vit" and reshape="channels_last" just work.

References: pytorch-grad-cam's GradCAM with its documented ``reshape_transform`` for ViT (drop the class
token, a 14x14 grid, channels first) and for Swin, on the same timm models (seeded, random weights:
nothing can be downloaded here), on the same layers and targets. pytorch-grad-cam scales its map with an
absolute epsilon (1e-7) before resizing, so the raw maps are compared: its ``relu(get_cam_image(...))``
from the activations and gradients it recorded, against ``result.raw``.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import convlens as cl
from invariants import assert_unchanged, snapshot

timm = pytest.importorskip("timm")
grad_cam = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

from gradcam_reference import assert_same_raw, reference_raw  # noqa: E402


def vit_reshape_transform(tensor: Tensor, height: int = 14, width: int = 14) -> Tensor:
    """pytorch-grad-cam's documented ViT reshape_transform, as its tutorial writes it."""
    result = tensor[:, 1:, :].reshape(tensor.size(0), height, width, tensor.size(2))
    return result.transpose(2, 3).transpose(1, 2)


def swin_reshape_transform(tensor: Tensor) -> Tensor:
    """pytorch-grad-cam's Swin reshape_transform for timm's (N, H, W, C) stages."""
    return tensor.permute(0, 3, 1, 2)


def timm_model(name: str) -> nn.Module:
    torch.manual_seed(0)
    model: nn.Module = timm.create_model(name, pretrained=False)
    return model.eval()


@pytest.mark.slow
def test_vit_with_the_vit_preset_equals_pytorch_grad_cam() -> None:
    model = timm_model("vit_tiny_patch16_224")
    torch.manual_seed(1)
    x = torch.randn(2, 3, 224, 224)
    before = snapshot(model)
    with pytest.raises(cl.InvalidArgumentError, match=r'tokens \(N, L, C\): pass reshape="vit"'):
        cl.GradCAM(model, "blocks.11.norm1")(x, target=[3, 7])
    ours = cl.GradCAM(model, "blocks.11.norm1", reshape="vit")(x, target=[3, 7])
    block = cl.GradCAM(model, "blocks.11", reshape="vit")(x, target=[3, 7])  # the call
    earlier = cl.GradCAM(model, "blocks.10", reshape="vit")(x, target=[3, 7])
    assert_unchanged(model, before)
    twin = copy.deepcopy(model)
    targets = [ClassifierOutputTarget(3), ClassifierOutputTarget(7)]
    expected = reference_raw(twin, twin.get_submodule("blocks.11.norm1"), x, targets, vit_reshape_transform)
    assert ours.raw.shape == (2, 14, 14)
    assert ours.maps.shape == (2, 224, 224)
    assert_same_raw(ours.raw, expected)
    # The last block's patch tokens reach no score (the head reads the class token only), so its map
    # is flat: that is why pytorch-grad-cam's tutorial reads blocks[-1].norm1. Any earlier block works.
    assert block.raw.shape == (2, 14, 14)
    assert float(block.raw.abs().amax()) == 0.0
    assert earlier.raw.shape == (2, 14, 14)
    assert float(earlier.maps.amax()) == 1.0


@pytest.mark.slow
def test_a_swin_stage_with_the_channels_last_preset_equals_pytorch_grad_cam() -> None:
    model = timm_model("swin_tiny_patch4_window7_224")
    torch.manual_seed(1)
    x = torch.randn(1, 3, 224, 224)
    with pytest.raises(cl.InvalidArgumentError, match=r'channels last.*reshape="channels_last"'):
        cl.GradCAM(model, "layers.3")(x, target=5)
    ours = cl.GradCAM(model, "layers.3", reshape="channels_last")(x, target=5)
    manual = cl.GradCAM(model, "layers.3", reshape=lambda t: t.permute(0, 3, 1, 2))(x, target=5)
    torch.testing.assert_close(ours.raw, manual.raw, rtol=0, atol=0)
    twin = copy.deepcopy(model)
    expected = reference_raw(
        twin, twin.get_submodule("layers.3"), x, [ClassifierOutputTarget(5)], swin_reshape_transform
    )
    assert ours.raw.shape == (1, 7, 7)
    assert_same_raw(ours.raw, expected)


class ConvNeXtLike(nn.Module):
    """A ConvNeXt block in miniature, channels last: depthwise conv, then LayerNorm and an MLP on (N, H, W, C)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 4, stride=4)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.block = nn.Sequential(nn.LayerNorm(8), nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8))
        self.head = nn.Linear(8, 4)

    def forward(self, x: Tensor) -> Tensor:
        y = self.block(self.dw(self.stem(x)).permute(0, 2, 3, 1))  # (N, H, W, C)
        out: Tensor = self.head(y.mean(dim=(1, 2)))
        return out


@pytest.mark.parametrize("method", [cl.GradCAM, cl.GradCAMPlusPlus, cl.XGradCAM, cl.LayerCAM, cl.EigenCAM])
def test_channels_last_preset_equals_the_manual_permute_for_every_method(method: type[cl.GradCAM]) -> None:
    torch.manual_seed(0)
    model = ConvNeXtLike().eval()
    x = torch.randn(2, 3, 16, 16)
    with pytest.raises(cl.InvalidArgumentError, match=r'channels last: a Linear .*reshape="channels_last"'):
        method(model, "block")(x, target=1)
    ours = method(model, "block", reshape="channels_last")(x, target=1)
    with torch.enable_grad():
        a = model.block(model.dw(model.stem(x)).permute(0, 2, 3, 1)).detach().requires_grad_()
        (g,) = torch.autograd.grad(model.head(a.mean(dim=(1, 2)))[:, 1].sum(), a)
    if method is cl.GradCAM:  # written out: the weights are the gradient's spatial mean
        a_first, g_first = a.detach().permute(0, 3, 1, 2), g.permute(0, 3, 1, 2)
        raw = F.relu((g_first.mean(dim=(2, 3), keepdim=True) * a_first).sum(dim=1))
        torch.testing.assert_close(ours.raw, raw)
    manual = method(model, "block", reshape=lambda t: t.permute(0, 3, 1, 2))(x, target=1)
    torch.testing.assert_close(ours.raw, manual.raw, rtol=0, atol=0)


class TokenNet(nn.Module):
    """A ViT in miniature with register tokens: [cls, 2 registers, 4x4 patches]."""

    def __init__(self, registers: int) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 6, 4, stride=4)
        self.prefix = nn.Parameter(torch.randn(1, 1 + registers, 6))
        self.mix = nn.Linear(6, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, x: Tensor) -> Tensor:
        patches = self.embed(x).flatten(2).transpose(1, 2)  # (N, 16, 6)
        tokens = torch.cat([self.prefix.expand(len(x), -1, -1), patches], dim=1)
        out: Tensor = self.head(self.mix(tokens)[:, 0])
        return out


@pytest.mark.parametrize("registers", [0, 4])
def test_vit_preset_drops_class_and_register_tokens(registers: int) -> None:
    torch.manual_seed(0)
    model = TokenNet(registers).eval()
    x = torch.randn(2, 3, 16, 16)
    ours = cl.GradCAM(model, "mix", reshape="vit")(x, target=2)
    skip = 1 + registers
    manual = cl.GradCAM(model, "mix", reshape=lambda t: t[:, skip:].reshape(2, 4, 4, 6).permute(0, 3, 1, 2))(
        x, target=2
    )
    assert ours.raw.shape == (2, 4, 4)
    torch.testing.assert_close(ours.raw, manual.raw, rtol=0, atol=0)
    guided = cl.GuidedGradCAM(model, "mix", reshape="vit")(x, target=2)
    torch.testing.assert_close(guided.cam, ours.maps)
