"""Targets for detectors and segmenters: which score of a box or of a region to explain.

Both are :class:`~convlens.core.targets.ScoreTarget` objects, so they go wherever
``target=`` goes (the CAM family, saliency, guided Grad-CAM):

- :class:`BoxScoreTarget`: for a detector whose output is a list of dicts with ``"boxes"``,
  ``"labels"`` and ``"scores"`` (torchvision's detectors in eval mode), the class score of the
  predicted box that best matches each given box by IoU, summed over the given boxes (as
  pytorch-grad-cam's ``FasterRCNNBoxScoreTarget``).
- :class:`SegmentationTarget`: for a segmenter whose output is ``(N, classes, H, W)`` scores, or a
  dict holding them under ``"out"`` (torchvision's segmenters), a class's score summed over a mask
  (as pytorch-grad-cam's ``SemanticSegmentationTarget``).

Example:
    >>> import torch
    >>> detections = [{"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]]),
    ...                "labels": torch.tensor([3, 5]), "scores": torch.tensor([0.9, 0.6])}]
    >>> [round(v, 4) for v in BoxScoreTarget(labels=[5], boxes=[[21.0, 20.0, 30.0, 30.0]])(detections).tolist()]
    [0.6]
    >>> logits = torch.zeros(1, 4, 8, 8)
    >>> logits[:, 2] = 1.0
    >>> mask = torch.zeros(8, 8, dtype=torch.bool)
    >>> mask[:2, :3] = True
    >>> SegmentationTarget(2, mask)({"out": logits}).tolist()
    [6.0]

References:
    Gildenblat et al., pytorch-grad-cam: "Class Activation Maps for object detection with Faster
    RCNN" and "Pixel attribution for semantic segmentation" tutorials.
    https://jacobgil.github.io/pytorch-gradcam-book
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from numbers import Integral
from typing import Any

import numpy as np
import torch
from torch import Tensor

from convlens.core.checks import check_bool, check_real
from convlens.core.targets import Rows, ScoreTarget, row_indices
from convlens.core.values import describe
from convlens.errors import InvalidArgumentError, InvalidTypeError

__all__ = ["BoxScoreTarget", "SegmentationTarget", "box_iou"]

_KEYS = ("boxes", "labels", "scores")


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Intersection over union of every box in ``a`` ``(K, 4)`` with every box in ``b`` ``(P, 4)``.

    Boxes are ``(x1, y1, x2, y2)``; the result ``(K, P)`` is differentiable in both.

    Example:
        >>> import torch
        >>> box_iou(torch.tensor([[0.0, 0.0, 2.0, 2.0]]), torch.tensor([[1.0, 0.0, 3.0, 2.0]])).tolist()
        [[0.3333333432674408]]
    """
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    low = torch.maximum(a[:, None, :2], b[None, :, :2])
    high = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (high - low).clamp(min=0).prod(dim=2)
    union = area_a[:, None] + area_b[None, :] - inter
    return inter / torch.where(union > 0, union, torch.ones_like(union))


def _as_tensor(name: str, value: object, *, dtype: torch.dtype) -> Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value.copy())
    if isinstance(value, Tensor):
        return value.detach().to(dtype)
    try:
        return torch.tensor(value, dtype=dtype)
    except (TypeError, ValueError, RuntimeError):
        raise InvalidTypeError(
            f"{name} must be a tensor, an array or a list of numbers; got {type(value).__name__}."
        ) from None


class BoxScoreTarget(ScoreTarget):
    """A detection's score: the class score of the predicted box best matching each given box.

    For each given box and label, among the predicted boxes with that label, the one of highest
    IoU with the given box counts when that IoU is above ``iou_threshold``; the target is the sum of
    their class scores (plus their IoUs with ``add_iou=True``, exactly as pytorch-grad-cam's
    ``FasterRCNNBoxScoreTarget``, whose gradient then also flows through the box coordinates). An
    image where nothing matches scores a constant 0. pytorch-grad-cam takes the best IoU over every
    label, then drops it if its label differs; here a box of another label never hides the match.

    Args:
        labels: The class of each given box, ``(K,)``; or a list with one such per image.
        boxes: The given boxes ``(K, 4)`` as ``(x1, y1, x2, y2)`` in the image's pixels (a
            detector's own predictions, typically); or a list with one such per image. Given once,
            the same boxes serve every image. Given per image, they follow their image where the work
            runs copies of it (ScoreCAM's masked copies, deletion's perturbed inputs): :meth:`take`.
        iou_threshold: The least IoU (exclusive) of a match, in [0, 1).
        add_iou: Add each match's IoU to its score (pytorch-grad-cam's definition).

    Raises:
        InvalidArgumentError: Boxes not ``(K, 4)``, labels and boxes of different lengths, or a
            threshold outside [0, 1).
        InvalidTypeError: Labels or boxes that are not numbers.

    Example:
        >>> import torch
        >>> out = [{"boxes": torch.tensor([[0.0, 0.0, 4.0, 4.0]]), "labels": torch.tensor([1]),
        ...         "scores": torch.tensor([0.8])}]
        >>> target = BoxScoreTarget(labels=[1], boxes=[[0.0, 0.0, 4.0, 4.0]], add_iou=True)
        >>> target
        BoxScoreTarget(1 box, iou_threshold=0.5, add_iou=True)
        >>> [round(v, 4) for v in target(out).tolist()]
        [1.8]
    """

    def __init__(
        self, labels: object, boxes: object, *, iou_threshold: float = 0.5, add_iou: bool = False
    ) -> None:
        threshold = check_real("iou_threshold", iou_threshold, positive=False)
        if not 0 <= threshold < 1:
            raise InvalidArgumentError(f"iou_threshold must be in [0, 1); got {iou_threshold!r}.")
        self.iou_threshold = threshold
        self.add_iou = check_bool("add_iou", add_iou)
        per_image = _per_image(boxes)
        if per_image != _per_image(labels, labels=True):
            raise InvalidArgumentError(
                "labels and boxes must both be given once (the same for every image) or both once per image."
            )
        box_list = list(boxes) if per_image else [boxes]  # type: ignore[call-overload]
        label_list = list(labels) if per_image else [labels]  # type: ignore[call-overload]
        if len(box_list) != len(label_list):
            raise InvalidArgumentError(
                f"labels and boxes must be given for as many images: {len(label_list)} and {len(box_list)}."
            )
        self.per_image = per_image
        self._specs = [_spec(lab, box) for lab, box in zip(label_list, box_list, strict=True)]

    def __repr__(self) -> str:
        count = sum(len(labels) for labels, _ in self._specs)
        what = f"{count} box{'es' if count != 1 else ''}" + (
            f" over {len(self._specs)} images" if self.per_image else ""
        )
        return f"BoxScoreTarget({what}, iou_threshold={self.iou_threshold}, add_iou={self.add_iou})"

    def check(self, n: int, output_shape: tuple[int, ...] | None) -> None:
        """Boxes given per image must be given for each of the ``n`` images."""
        if self.per_image and len(self._specs) != n:
            raise InvalidArgumentError(
                f"BoxScoreTarget holds boxes for {len(self._specs)} images, for a batch of {n}; give one "
                "set per image, or one set for every image."
            )

    def take(self, rows: Rows) -> BoxScoreTarget:
        """Boxes given per image follow the images: the boxes of image ``rows[j]`` for row ``j``.

        Boxes given once serve every image: the target itself.

        Raises:
            InvalidArgumentError: A row outside the images the boxes were given for.

        Example:
            >>> target = BoxScoreTarget(labels=[[1], [2, 3]], boxes=[[[0, 0, 4, 4]], [[1, 1, 5, 5], [0, 0, 2, 2]]])
            >>> target.take([1, 1])
            BoxScoreTarget(4 boxes over 2 images, iou_threshold=0.5, add_iou=False)
        """
        if not self.per_image:
            return self
        taken = copy.copy(self)
        taken._specs = [self._specs[i] for i in row_indices(rows, len(self._specs))]
        return taken

    def __call__(self, output: Any) -> Tensor:
        """One score per image of a detector's output (a list of dicts, or one dict for one image)."""
        detections = [output] if isinstance(output, Mapping) else output
        if not isinstance(detections, Sequence) or not all(
            isinstance(d, Mapping) and all(isinstance(d.get(k), Tensor) for k in _KEYS) for d in detections
        ):
            raise InvalidArgumentError(
                "BoxScoreTarget needs a detector's output: a list of dicts with tensors under 'boxes', "
                f"'labels' and 'scores' (torchvision's detectors in eval mode); got {describe(output)}."
            )
        self.check(len(detections), None)
        specs = self._specs if self.per_image else self._specs * len(detections)
        return torch.stack([self._score(d, *spec) for d, spec in zip(detections, specs, strict=True)])

    def _score(self, detection: Mapping[str, Tensor], labels: Tensor, boxes: Tensor) -> Tensor:
        predicted, scores = detection["boxes"], detection["scores"]
        total = scores.new_zeros(())
        if len(predicted) == 0 or len(boxes) == 0:
            return total
        ious = box_iou(boxes.to(predicted.device, predicted.dtype), predicted)  # (K, P)
        same = labels.to(predicted.device)[:, None] == detection["labels"][None, :]
        candidates = torch.where(same, ious, torch.full_like(ious, -1.0)).detach()
        best = candidates.argmax(dim=1)
        for k, index in enumerate(best.tolist()):
            if candidates[k, index] > self.iou_threshold:
                total = total + scores[index] + (ious[k, index] if self.add_iou else 0)
        return total


def _per_image(value: object, *, labels: bool = False) -> bool:
    """Whether ``value`` is a list of per-image tensors (boxes ``(K, 4)``, labels ``(K,)``)."""
    if isinstance(value, Tensor | np.ndarray | str) or not isinstance(value, Sequence):
        return False
    inner = 1 if labels else 2

    def nested(v: object) -> bool:  # a list of boxes is a list of lists; a list of labels a list
        if isinstance(v, Tensor | np.ndarray):
            return v.ndim == inner
        if isinstance(v, str) or not isinstance(v, Sequence):
            return False
        return labels or (bool(v) and isinstance(v[0], Sequence) and not isinstance(v[0], str))

    return bool(value) and all(nested(v) for v in value)


def _spec(labels: object, boxes: object) -> tuple[Tensor, Tensor]:
    box = _as_tensor("boxes", boxes, dtype=torch.float32)
    if box.dim() == 1 and box.numel() == 4:
        box = box.unsqueeze(0)
    if box.dim() != 2 or box.shape[1] != 4:
        raise InvalidArgumentError(f"boxes must be (K, 4) as (x1, y1, x2, y2); got shape {tuple(box.shape)}.")
    label = _as_tensor("labels", [labels] if isinstance(labels, Integral) else labels, dtype=torch.int64)
    if label.dim() != 1 or len(label) != len(box):
        raise InvalidArgumentError(
            f"labels must hold one class per box: {len(box)} boxes, labels of shape {tuple(label.shape)}."
        )
    return label, box


class SegmentationTarget(ScoreTarget):
    """A segmentation's score: class ``label``'s score summed over a mask, per image.

    The output is ``(N, classes, H, W)`` scores, or a dict holding them under ``"out"``
    (torchvision's segmenters); the score of image ``n`` is ``sum(out[n, label] * mask)``.

    Args:
        label: The class whose score is summed.
        mask: ``(H, W)`` (the same for every image) or ``(N, H, W)``, bool or float weights, at the
            output's resolution (torchvision's segmenters answer at the input's). An ``(N, H, W)`` mask
            follows its image where the work runs copies of it (ScoreCAM's masked copies,
            deletion's perturbed inputs): :meth:`take`.

    Raises:
        InvalidArgumentError: A negative label, or a mask that is not ``(H, W)`` or ``(N, H, W)``;
            before any work, a label or mask that does not fit the model's output.
        InvalidTypeError: A label that is not an int.

    Example:
        >>> import torch
        >>> target = SegmentationTarget(1, torch.ones(4, 4))
        >>> target
        SegmentationTarget(label=1, mask (4, 4))
        >>> target(torch.ones(2, 3, 4, 4)).tolist()
        [16.0, 16.0]
    """

    def __init__(self, label: object, mask: object) -> None:
        if isinstance(label, bool) or not isinstance(label, Integral):
            raise InvalidTypeError(f"label must be a class index (int); got {type(label).__name__}.")
        if label < 0:
            raise InvalidArgumentError(f"label must be 0 or more; got {label}.")
        self.label: int = int(label)
        weights = _as_tensor("mask", mask, dtype=torch.float32)
        if weights.dim() not in (2, 3):
            raise InvalidArgumentError(f"mask must be (H, W) or (N, H, W); got shape {tuple(weights.shape)}.")
        self.mask: Tensor = weights

    def __repr__(self) -> str:
        return f"SegmentationTarget(label={self.label}, mask {tuple(self.mask.shape)})"

    def check(self, n: int, output_shape: tuple[int, ...] | None) -> None:
        """The label and the mask must fit the scores ``(N, classes, H, W)`` (the output's first tensor)."""
        if self.mask.dim() == 3 and self.mask.shape[0] != n:
            raise InvalidArgumentError(
                f"the mask holds {self.mask.shape[0]} images' masks for a batch of {n}; give one per "
                "image, or one (H, W) mask for every image."
            )
        if output_shape is None or len(output_shape) != 4:
            return
        if self.label >= output_shape[1]:
            raise InvalidArgumentError(
                f"label {self.label} is out of range: the model gives {output_shape[1]} class scores per "
                f"pixel (0 to {output_shape[1] - 1})."
            )
        if tuple(self.mask.shape[-2:]) != output_shape[2:]:
            raise InvalidArgumentError(
                f"the mask is {tuple(self.mask.shape[-2:])} but the model's scores are "
                f"{output_shape[2:]} per class; give a mask at the output's resolution."
            )

    def take(self, rows: Rows) -> SegmentationTarget:
        """A mask per image follows the images: the mask of image ``rows[j]`` for row ``j``.

        One ``(H, W)`` mask serves every image: the target itself.

        Raises:
            InvalidArgumentError: A row outside the images the masks were given for.

        Example:
            >>> import torch
            >>> masks = torch.zeros(2, 4, 4)
            >>> masks[1, 0, 0] = 1.0
            >>> taken = SegmentationTarget(0, masks).take(torch.tensor([1, 1, 1]))
            >>> taken, taken(torch.ones(3, 2, 4, 4)).tolist()
            (SegmentationTarget(label=0, mask (3, 4, 4)), [1.0, 1.0, 1.0])
        """
        if self.mask.dim() == 2:
            return self
        taken = copy.copy(self)
        taken.mask = self.mask[row_indices(rows, len(self.mask))]
        return taken

    def __call__(self, output: Any) -> Tensor:
        """One score per image of ``(N, classes, H, W)`` scores (or a dict with them under ``"out"``)."""
        scores = output.get("out") if isinstance(output, Mapping) else output
        if not isinstance(scores, Tensor) or scores.dim() != 4:
            raise InvalidArgumentError(
                "SegmentationTarget needs scores (N, classes, H, W), or a dict with them under 'out'; got "
                f"{describe(output)}."
            )
        self.check(len(scores), tuple(scores.shape))
        mask = self.mask.to(scores.device, scores.dtype)
        summed: Tensor = (scores[:, self.label] * mask).flatten(1).sum(dim=1)
        return summed
