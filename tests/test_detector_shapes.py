"""Detectors take a list of images: trace_shapes and LayerTap.run treat the list as the model's one input.

torchvision's ``fasterrcnn_mobilenet_v3_large_320_fpn`` (random weights, seeded): its forward resizes and
batches the images (``transform``), runs the backbone and the FPN, then selects boxes with data-dependent
code, so the meta probe cannot run it whole and trace_shapes falls back to one real forward. Every number
is checked against the model's own pieces run by hand; the model is left as found.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import pytest
import torch
from torch import Tensor

import convlens as cl
from invariants import assert_unchanged, snapshot

detection = pytest.importorskip("torchvision.models.detection")


@pytest.fixture(scope="module")
def detector() -> Any:
    torch.manual_seed(0)
    model: Any = detection.fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None)
    return model.eval()


@pytest.fixture
def image() -> Tensor:
    return torch.rand(3, 120, 160, generator=torch.Generator().manual_seed(0))


def batched(detector: Any, image: Tensor) -> Tensor:
    """What the detector's backbone sees: the transformed, padded batch (computed by hand)."""
    with torch.no_grad():
        images, _ = detector.transform([image])
    tensors: Tensor = images.tensors
    return tensors


@pytest.mark.parametrize("form", ["list", "tuple holding the list"])
def test_trace_shapes_takes_a_list_of_images(detector: Any, image: Tensor, form: str) -> None:
    before = snapshot(detector)
    report = cl.trace_shapes(detector, [image] if form == "list" else ([image],))
    assert_unchanged(detector, before)
    x = batched(detector, image)
    first = detector.backbone.body["0"][0]  # the stem convolution
    with torch.no_grad():
        stem = first(x)
    assert report["backbone.body.0.0"].input_shape == tuple(x.shape)
    assert report["backbone.body.0.0"].output_shape == tuple(stem.shape)
    with torch.no_grad():
        pyramid = detector.backbone(x)
    # The FPN's output convolutions, one per level: each row's shape is that level's map.
    for level, layer in enumerate(["backbone.fpn.layer_blocks.0.0", "backbone.fpn.layer_blocks.1.0"]):
        assert report[layer].output_shape == tuple(pyramid[str(level)].shape)
    assert report.input_shape == tuple(image.shape)
    assert report.traced == "real"  # box selection needs data: one real forward, said so


@pytest.mark.slow  # two real forwards of a detector
def test_both_forms_give_the_same_table(detector: Any, image: Tensor) -> None:
    assert str(cl.trace_shapes(detector, [image])) == str(cl.trace_shapes(detector, ([image],)))


def test_an_unusable_input_is_described_by_its_shapes_never_its_values(detector: Any, image: Tensor) -> None:
    with pytest.raises(cl.InvalidTypeError) as caught:
        cl.trace_shapes(detector, {"images": [image]})  # type: ignore[arg-type]
    message = str(caught.value)
    assert "dict {images: list [Tensor[3, 120, 160] float32]}" in message
    assert "tensor(" not in message
    assert f"{image[0, 0, 0].item():.4f}" not in message
    with pytest.raises(cl.InvalidTypeError, match=r"got list \[float 2\.5\] at position 1") as caught:
        cl.trace_shapes(detector, (1, [2.5]))


def test_layer_tap_run_takes_the_list(detector: Any, image: Tensor) -> None:
    before = snapshot(detector)
    tap = cl.LayerTap(detector, ["backbone.body", "backbone.fpn"])
    acts = tap.run([image])
    assert_unchanged(detector, before)
    with torch.no_grad():
        body = detector.backbone.body(batched(detector, image))
        pyramid = detector.backbone.fpn(body)
    assert isinstance(tap.outputs["backbone.fpn"], OrderedDict)
    assert list(tap.outputs["backbone.fpn"]) == list(pyramid)
    for key, level in pyramid.items():
        torch.testing.assert_close(tap.outputs["backbone.fpn"][key], level, rtol=0, atol=0)
    torch.testing.assert_close(acts["backbone.fpn"], pyramid["0"], rtol=0, atol=0)  # the first tensor
    torch.testing.assert_close(acts["backbone.body"], body["0"], rtol=0, atol=0)
