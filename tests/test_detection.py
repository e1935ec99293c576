"""Detectors and segmenters: list-of-images inputs, box and mask targets, CAMs at backbone and FPN layers.

The references are pytorch-grad-cam's GradCAM with its own FasterRCNNBoxScoreTarget and
SemanticSegmentationTarget on the same seeded torchvision models. pytorch-grad-cam min-max scales the
raw map with an absolute epsilon of 1e-7 (the random models' maps are about 1e-7 and smaller), then
resizes it with OpenCV; convlens resizes, then scales. So the raw maps are compared: pytorch-grad-cam's
``relu(get_cam_image(...))`` from the activations and gradients it recorded, against ``result.raw``.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import convlens as cl
from convlens.attribution.detection import BoxScoreTarget, SegmentationTarget, box_iou
from helpers import tolerance
from invariants import assert_unchanged, snapshot

torchvision = pytest.importorskip("torchvision")
grad_cam = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import (  # noqa: E402
    FasterRCNNBoxScoreTarget,
    SemanticSegmentationTarget,
)

from gradcam_reference import assert_same_raw, reference_raw  # noqa: E402


def detector() -> nn.Module:
    """Seeded random weights (nothing can be downloaded here). A random detector's class scores are
    all about 1/91, below the default ``box_score_thresh`` of 0.05: the threshold is 0 so that it
    predicts boxes at all."""
    torch.manual_seed(0)
    model: nn.Module = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None, box_score_thresh=0.0
    )
    return model.eval()


@pytest.mark.slow
def test_fpn_and_backbone_gradcam_of_a_box_equal_pytorch_grad_cam() -> None:
    model = detector()
    torch.manual_seed(1)
    img = torch.rand(3, 320, 320)  # 320x320: the transform neither resizes nor pads it
    with torch.no_grad():
        (found,) = model([img])
    assert len(found["boxes"]) > 0, "the seeded detector must predict boxes"
    labels, boxes = found["labels"][:3], found["boxes"][:3]
    before = snapshot(model)
    ours_fpn = cl.GradCAM(model, "backbone.fpn", reshape=cl.Layout(part="0"))(
        [img], target=BoxScoreTarget(labels, boxes, add_iou=True)
    )
    ours_body = cl.GradCAM(model, "backbone.body.16")(
        [img], target=BoxScoreTarget(labels, boxes, add_iou=True)
    )
    assert_unchanged(model, before)

    twin = copy.deepcopy(model)
    target = [FasterRCNNBoxScoreTarget(labels.tolist(), boxes.numpy(), iou_threshold=0.5)]
    # The FPN returns an OrderedDict, whose gradient pytorch-grad-cam cannot hook: its level "0" is
    # the output of layer_blocks[0], a tensor, which it can.
    expected_fpn = reference_raw(twin, twin.get_submodule("backbone.fpn.layer_blocks.0"), img[None], target)
    expected_body = reference_raw(twin, twin.get_submodule("backbone.body.16"), img[None], target)

    assert ours_fpn.maps.shape == (1, 320, 320)
    assert ours_fpn.raw.shape == (1, 10, 10)  # the 320 model reads its last stages, stride 32
    assert_same_raw(ours_fpn.raw, expected_fpn)
    assert_same_raw(ours_body.raw, expected_body)
    # The score explained: the three boxes' scores plus their IoUs (1: each matches itself).
    torch.testing.assert_close(ours_fpn.scores, (found["scores"][:3].sum() + 3)[None])


@pytest.mark.slow
def test_a_batch_of_images_gives_one_map_per_image_and_per_image_boxes() -> None:
    model = detector()
    torch.manual_seed(2)
    images = [torch.rand(3, 320, 320), torch.rand(3, 320, 320)]
    with torch.no_grad():
        found = model(images)
    target = BoxScoreTarget([f["labels"][:2] for f in found], [f["boxes"][:2] for f in found])
    cam = cl.GradCAM(model, "backbone.fpn", reshape=cl.Layout(part="0"))
    both = cam(images, target=target)
    assert both.maps.shape == (2, 320, 320)
    for i, image in enumerate(images):
        alone = cam([image], target=BoxScoreTarget(found[i]["labels"][:2], found[i]["boxes"][:2]))
        torch.testing.assert_close(both.raw[i], alone.raw[0], **tolerance(scale=float(alone.raw.amax())))
    with pytest.raises(cl.InvalidArgumentError, match="boxes for 2 images, for a batch of 1"):
        cam([images[0]], target=target)


def segmenter(kind: str) -> nn.Module:
    torch.manual_seed(0)
    build = getattr(torchvision.models.segmentation, kind)
    model: nn.Module = build(weights=None, weights_backbone=None, num_classes=5)
    return model.eval()


class Out(nn.Module):
    """The wrapper pytorch-grad-cam's tutorial writes: the segmenter's "out" tensor alone."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.model(x)["out"]
        return out


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "layer"), [("lraspp_mobilenet_v3_large", "backbone.16")])
def test_segmentation_gradcam_equals_pytorch_grad_cam(kind: str, layer: str) -> None:
    model = segmenter(kind)
    torch.manual_seed(1)
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        predicted = model(x)["out"].argmax(dim=1)[0]
    label = int(predicted.flatten().mode().values)
    mask = (predicted == label).float()
    before = snapshot(model)
    ours = cl.GradCAM(model, layer)(x, target=SegmentationTarget(label, mask))  # the dict output, as is
    assert_unchanged(model, before)
    twin = copy.deepcopy(model)
    expected = reference_raw(
        Out(twin), twin.get_submodule(layer), x, [SemanticSegmentationTarget(label, mask.numpy())]
    )
    assert_same_raw(ours.raw, expected)
    torch.testing.assert_close(ours.scores, (model(x)["out"][0, label] * mask).sum()[None].detach())


@pytest.mark.slow
def test_deeplab_segmentation_target_and_bad_masks_before_work() -> None:
    model = segmenter("deeplabv3_mobilenet_v3_large")
    x = torch.rand(1, 3, 64, 64)
    out = cl.GradCAM(model, "backbone.16")(x, target=SegmentationTarget(1, torch.ones(64, 64)))
    assert out.maps.shape == (1, 64, 64)
    with pytest.raises(cl.InvalidArgumentError, match=r"label 7 is out of range: .*5 class scores"):
        cl.GradCAM(model, "backbone.16")(x, target=SegmentationTarget(7, torch.ones(64, 64)))
    with pytest.raises(cl.InvalidArgumentError, match=r"the mask is \(32, 32\) but .*\(64, 64\)"):
        cl.GradCAM(model, "backbone.16")(x, target=SegmentationTarget(1, torch.ones(32, 32)))


# -- the targets alone, on outputs written by hand ------------------------------------------------


def detections(boxes: list[list[float]], labels: list[int], scores: list[float]) -> dict[str, Tensor]:
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32, requires_grad=True),
        "labels": torch.tensor(labels),
        "scores": torch.tensor(scores, dtype=torch.float32, requires_grad=True),
    }


def test_box_iou_by_hand() -> None:
    a = torch.tensor([[0.0, 0.0, 4.0, 4.0]])
    b = torch.tensor([[2.0, 2.0, 6.0, 6.0], [10.0, 10.0, 12.0, 12.0], [0.0, 0.0, 4.0, 4.0]])
    assert box_iou(a, b).tolist() == [pytest.approx([4 / 28, 0.0, 1.0])]


def test_the_best_box_of_the_same_label_counts_and_another_label_never_hides_it() -> None:
    out = detections(
        [[0, 0, 10, 10], [1, 0, 10, 10], [50, 50, 60, 60]],
        [2, 7, 7],
        [0.9, 0.4, 0.3],
    )
    # The box of label 2 overlaps best, but the given label is 7: the best box of label 7 counts.
    assert BoxScoreTarget([7], [[0, 0, 10, 10]])(out).tolist() == pytest.approx([0.4])
    assert BoxScoreTarget([7], [[0, 0, 10, 10]], add_iou=True)(out).tolist() == pytest.approx([1.3])
    # Far from every box of its label: nothing matches, a constant 0.
    nothing = BoxScoreTarget([2], [[50, 50, 60, 60]])(out)
    assert nothing.tolist() == [0.0]
    assert not nothing.requires_grad
    # Two given boxes, two matches, summed; the threshold is exclusive.
    both = BoxScoreTarget([2, 7], [[0, 0, 10, 10], [50, 50, 60, 60]])(out)
    assert both.tolist() == pytest.approx([1.2])
    assert BoxScoreTarget([7], [[1, 0, 10, 10]], iou_threshold=0.99)(out).tolist() == pytest.approx([0.4])
    half = [[0, 0, 10, 5]]  # IoU 0.5 with the first box
    assert BoxScoreTarget([2], half, iou_threshold=0.5)(out).tolist() == [0.0]
    assert BoxScoreTarget([2], half, iou_threshold=0.49)(out).tolist() == pytest.approx([0.9])


def test_box_scores_are_differentiable_in_the_scores_and_with_iou_in_the_boxes() -> None:
    out = detections([[0, 0, 10, 10]], [1], [0.5])
    (grad_scores, grad_boxes) = torch.autograd.grad(
        BoxScoreTarget([1], [[0, 0, 10, 8]], add_iou=True)(out).sum(), [out["scores"], out["boxes"]]
    )
    assert grad_scores.tolist() == [1.0]
    assert bool((grad_boxes != 0).any())


def test_box_score_target_agrees_with_pytorch_grad_cams_on_its_own_outputs() -> None:
    torch.manual_seed(0)
    corners = torch.rand(6, 2) * 50
    boxes = torch.cat([corners, corners + 5 + torch.rand(6, 2) * 20], dim=1)
    out = {"boxes": boxes, "labels": torch.tensor([1, 2, 1, 3, 2, 1]), "scores": torch.rand(6)}
    given = boxes[[0, 3, 4]] + 0.5
    ours = BoxScoreTarget(out["labels"][[0, 3, 4]], given, add_iou=True)([out])
    reference = FasterRCNNBoxScoreTarget(out["labels"][[0, 3, 4]].tolist(), given.numpy())(out)
    torch.testing.assert_close(ours, reference)


@pytest.mark.parametrize(
    ("labels", "boxes", "kwargs", "error", "message"),
    [
        ([1], [[0, 0, 1]], {}, cl.InvalidArgumentError, r"boxes must be \(K, 4\)"),
        ([1, 2], [[0, 0, 1, 1]], {}, cl.InvalidArgumentError, "one class per box: 1 boxes"),
        ([1], [[0, 0, 1, 1]], {"iou_threshold": 1.0}, cl.InvalidArgumentError, r"in \[0, 1\)"),
        ([1], [[0, 0, 1, 1]], {"add_iou": 1}, cl.InvalidTypeError, "add_iou"),
        ([1], "box", {}, cl.InvalidTypeError, "boxes must be a tensor"),
        ([torch.tensor([1])], [[0, 0, 1, 1]], {}, cl.InvalidArgumentError, "both be given once"),
    ],
)
def test_bad_box_targets_are_refused_at_construction(
    labels: Any, boxes: Any, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        BoxScoreTarget(labels, boxes, **kwargs)


def test_a_box_target_needs_a_detectors_output() -> None:
    with pytest.raises(cl.InvalidArgumentError, match=r"a detector's output.*got Tensor\[2, 10\] float32"):
        BoxScoreTarget([1], [[0, 0, 1, 1]])(torch.zeros(2, 10))


def test_segmentation_target_by_hand_and_its_checks() -> None:
    scores = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    mask = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # Image 0, class 1: 4 + 7; image 1, class 1: 16 + 19.
    assert SegmentationTarget(1, mask)(scores).tolist() == [11.0, 35.0]
    assert SegmentationTarget(1, mask)({"out": scores, "aux": scores}).tolist() == [11.0, 35.0]
    per_image = torch.stack([mask, 2 * mask])
    assert SegmentationTarget(1, per_image)(scores).tolist() == [11.0, 70.0]
    assert SegmentationTarget(1, mask.numpy())(scores).tolist() == [11.0, 35.0]
    with pytest.raises(cl.InvalidTypeError, match="label must be a class index"):
        SegmentationTarget(True, mask)
    with pytest.raises(cl.InvalidArgumentError, match=r"mask must be \(H, W\)"):
        SegmentationTarget(1, torch.ones(4))
    with pytest.raises(cl.InvalidArgumentError, match="label 3 is out of range"):
        SegmentationTarget(3, mask)(scores)
    with pytest.raises(cl.InvalidArgumentError, match="3 images' masks for a batch of 2"):
        SegmentationTarget(1, torch.ones(3, 2, 2))(scores)
    with pytest.raises(cl.InvalidArgumentError, match=r"scores \(N, classes, H, W\), .*'out'"):
        SegmentationTarget(1, mask)({"logits": scores})


class TinySegmenter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Conv2d(4, 3, 1)
        self.real_calls = 0

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        if not x.is_meta:
            self.real_calls += 1
        return {"out": self.head(torch.relu(self.conv(x)))}


def test_a_segmentation_target_that_does_not_fit_fails_before_any_forward() -> None:
    model = TinySegmenter().eval()
    with pytest.raises(cl.InvalidArgumentError, match="label 3 is out of range"):
        cl.GradCAM(model, "conv")(torch.rand(2, 3, 8, 8), target=SegmentationTarget(3, torch.ones(8, 8)))
    assert model.real_calls == 0
    out = cl.Saliency(model)(torch.rand(2, 3, 8, 8), target=SegmentationTarget(2, torch.ones(8, 8)))
    assert out.maps.shape == (2, 8, 8)


# -- a target per image follows its images: take ------------------------------------------


def test_a_mask_per_image_follows_the_rows_taken_and_one_mask_serves_all() -> None:
    scores = torch.arange(3 * 2 * 2 * 2, dtype=torch.float32).reshape(3, 2, 2, 2)
    masks = torch.stack([torch.eye(2), torch.ones(2, 2), torch.zeros(2, 2)])
    target = SegmentationTarget(1, masks)
    taken = target.take(torch.tensor([1, 1, 0]))
    assert tuple(taken.mask.shape) == (3, 2, 2)
    assert tuple(target.mask.shape) == (3, 2, 2)  # the target given is left as it was
    # Row j is scored with the mask of image rows[j]: the same as the given target on those images.
    by_rows = torch.stack([target(scores)[i] for i in (1, 1, 0)])
    expected = torch.stack([(scores[j, 1] * masks[i]).sum() for j, i in enumerate((1, 1, 0))])
    torch.testing.assert_close(taken(scores), expected)
    torch.testing.assert_close(target.take([1, 1, 0])(scores[[1, 1, 0]]), by_rows)
    assert target.take(slice(2, 3)).mask.tolist() == [[[0.0, 0.0], [0.0, 0.0]]]
    one = SegmentationTarget(1, torch.eye(2))
    assert one.take(torch.tensor([0, 0, 0, 0])) is one
    with pytest.raises(cl.InvalidArgumentError, match=r"row 3 is out of range for a batch of 3"):
        target.take([3])


def test_boxes_per_image_follow_the_rows_taken_and_boxes_given_once_serve_all() -> None:
    out = [
        detections([[0, 0, 4, 4], [5, 5, 9, 9]], [1, 2], [0.9, 0.3]),
        detections([[0, 0, 4, 4], [5, 5, 9, 9]], [1, 2], [0.2, 0.7]),
    ]
    target = BoxScoreTarget([[1], [2]], [[[0, 0, 4, 4]], [[5, 5, 9, 9]]])
    assert target(out).tolist() == pytest.approx([0.9, 0.7])
    # Three copies of image 1 (whatever their detections): each scored with image 1's box, label 2.
    taken = target.take(torch.tensor([1, 1, 1]))
    assert taken(out + out[:1]).tolist() == pytest.approx([0.3, 0.7, 0.3])
    assert repr(taken) == "BoxScoreTarget(3 boxes over 3 images, iou_threshold=0.5, add_iou=False)"
    assert repr(target) == "BoxScoreTarget(2 boxes over 2 images, iou_threshold=0.5, add_iou=False)"
    with pytest.raises(cl.InvalidArgumentError, match="boxes for 3 images, for a batch of 2"):
        taken(out)
    once = BoxScoreTarget([1], [[0, 0, 4, 4]])
    assert once.take([0, 0, 0]) is once
    with pytest.raises(cl.InvalidArgumentError, match=r"row 2 is out of range for a batch of 2"):
        target.take([0, 2])
