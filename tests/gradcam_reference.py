"""pytorch-grad-cam as the independent reference of the "any model" CAM tests (detectors, segmenters, ViT, Swin).

Imported by tests that have already skipped themselves without ``pytorch_grad_cam``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from torch import Tensor, nn


def reference_raw(
    model: nn.Module,
    layer: nn.Module,
    x: Tensor,
    targets: list[Any],
    transform: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """pytorch-grad-cam's map before its scaling (use a copy of the model: it writes ``.grad``).

    Its scaled maps add ``1e-7`` before the min-max, which swamps a random model's maps of about that
    size, so the comparison is on the raw ``relu(sum_k w_k A_k)``.
    """
    with GradCAM(model=model, target_layers=[layer], reshape_transform=transform) as cam:
        cam(input_tensor=x, targets=targets)
        recorded = cam.activations_and_grads
        (activations,), (gradients,) = recorded.activations, recorded.gradients
        raw = cam.get_cam_image(x, layer, targets, activations.numpy(), gradients.numpy())
    return torch.from_numpy(np.maximum(raw, 0)).float()


def assert_same_raw(ours: Tensor, reference: Tensor) -> None:
    """Equal up to float32 rounding, relative to the map's size; a flat reference proves nothing."""
    scale = float(reference.abs().amax())
    assert scale > 0, "the reference map is flat: the test would prove nothing"
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-4 * scale)
