"""Feature accentuation: what in this picture would make it more of a unit or a class.

Hamblin, Fel et al. (2024): a feature visualization seeded with a real picture rather than noise,
pulled towards the objective while staying close to the seed's representation in an intermediate
layer. :func:`accentuate` starts the maximizer's parameterization at the picture (``start=``: the
first rendered picture is the seed) and subtracts the relative squared distance between the
layer's activations of the picture and of the seed, each seen through the same random view of each
step (:class:`~convlens.featureviz.anchor.Anchor`). What changes shows what the unit answers to in
this picture; where it changes shows where.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from convlens.core.inputs import ForwardArgsLike
from convlens.core.probe import check_inputs
from convlens.errors import InvalidTypeError
from convlens.featureviz.anchor import Anchor
from convlens.featureviz.maximize import (
    ActivationMaximizer,
    MaximizationResult,
    Normalize,
    Param,
    TransformName,
)
from convlens.featureviz.objectives import Objective

__all__ = ["DEFAULT_WEIGHT", "accentuate"]

#: How strongly the seed's representation holds by default: the objective minus this times the
#: relative squared distance.
DEFAULT_WEIGHT = 10.0


def accentuate(
    model: nn.Module,
    objective: Objective,
    pictures: Tensor,
    *,
    layer: str,
    weight: float = DEFAULT_WEIGHT,
    steps: int = 64,
    lr: float | None = None,
    seed: int = 0,
    normalize: Normalize | None = None,
    param: Param | None = None,
    value_range: tuple[float, float] | None = None,
    transforms: bool | TransformName | None = None,
    reference: float | Sequence[float] | Tensor | None = None,
    forward_args: ForwardArgsLike = None,
) -> MaximizationResult:
    """Accentuate ``objective`` in real pictures: start at them, stay close to them at ``layer``.

    Args:
        model: Any ``nn.Module`` (run in eval mode; left as found).
        objective: What to increase, e.g. ``channel("features.10", 5)`` or ``class_logit(1)``.
        pictures: The seeds, ``(N, C, H, W)``: pictures in [0, 1] with ``normalize``, else the
            model's own input values (inside ``value_range`` when one is given).
        layer: The intermediate layer whose representation of the seed the picture stays close to
            (an earlier layer keeps the look, a later one the content).
        weight: How strongly it stays close (the objective minus ``weight`` times the relative
            squared distance); 0 is a free feature visualization started at the picture.
        steps: Adam steps.
        lr: Adam's learning rate (None: the parameterization's default).
        seed: Seeds the random views (the start is the picture, not noise).
        normalize: The picture space, as for :class:`~convlens.featureviz.maximize.ActivationMaximizer`.
        param: ``"fft"`` (the default with ``normalize``) or ``"pixel"``; ``"maco"`` cannot start
            from a picture.
        value_range: Without ``normalize``: the range the values stay in (``(0, 1)`` for the digits).
        transforms: The random views of each step (None: the maximizer's default for the space).
        reference: The unit's top natural activation, for the result's ``quality.relative``.
        forward_args: The model's other forward arguments, as for the maximizer.

    Returns:
        A :class:`~convlens.featureviz.maximize.MaximizationResult`: the accentuated pictures
        (``picture`` with ``normalize``, else ``image``), ``values`` the objective reached (without
        the distance), ``mask`` where the optimization pushed.

    Raises:
        InvalidTypeError: ``pictures`` not a floating-point tensor; see ActivationMaximizer for the rest.
        InvalidArgumentError: Pictures outside [0, 1] with ``normalize``, a negative weight, a
            layer the model lacks (the nearest named), ``param="maco"``.

    Example:
        >>> import torch
        >>> from convlens.featureviz.objectives import class_logit
        >>> from convlens.models.zoo import digits_cnn, digits_dataset
        >>> model = digits_cnn()
        >>> three = digits_dataset("test")[3][0][None]   # a real digit
        >>> res = accentuate(model, class_logit(8), three, layer="features.1", steps=20, value_range=(0, 1))
        >>> res.image.shape, res.mask.shape
        (torch.Size([1, 1, 28, 28]), torch.Size([1, 1, 28, 28]))
    """
    given: object = pictures  # typed as a tensor; checked as what a user may pass
    if not isinstance(given, Tensor):
        check_inputs([given])  # a numpy array or a PIL image: the conversion is named
        raise InvalidTypeError(f"pictures must be a tensor (N, C, H, W); got {type(pictures).__name__}.")
    am = ActivationMaximizer(
        model,
        objective,
        input_shape=tuple(pictures.shape),
        steps=steps,
        lr=lr,
        seed=seed,
        normalize=normalize,
        param=param,
        value_range=value_range,
        transforms=transforms,
        forward_args=forward_args,
        start=pictures,
        anchor=Anchor(layer, weight),
        reference=reference,
    )
    return am.run()
