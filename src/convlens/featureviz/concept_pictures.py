"""Concept pictures: one feature visualization per concept of a bank, drawn in one batch.

A concept is a direction in a layer's channel space (a row of :attr:`convlens.ConceptsResult.bank`).
Its picture is the input that points the layer's activations along it: the maximizer ascends
:func:`~convlens.featureviz.objectives.direction` with Lucid's floored cosine (``cossim_pow=1``), one
image per concept, the whole bank in one batch (image ``i`` follows row ``i``), so ``n`` concepts cost
one forward and backward per step, as ``n`` units of :meth:`convlens.NeuronVisualizer.maximize` do.

The recipe is the house's, the one :func:`convlens.build_atlas` draws its units with; nothing here
chooses another:

- with ``normalize`` (a preset such as ``"imagenet"``, or ``(mean, std)``): a picture in [0, 1] that
  the model sees as ``(picture - mean) / std``, parameterized by a 1/f spectrum decaying as
  photographs' do, in decorrelated colours, held to a photograph's spectrum, seen through random
  jitter, scale and rotation
  (:class:`~convlens.featureviz.maximize.ActivationMaximizer`'s defaults in picture space);
- with ``normalize=None`` (a model that reads its input as it is, like the digits CNN: 1 channel,
  ink bright in [0, 1]): the input's own values, kept in [0, 1] by a sigmoid, no transforms (the
  atlas's and the tour's recipe for the digits).

Example:
    >>> import convlens as cl
    >>> from convlens.models.zoo import digits_cnn, digits_dataset
    >>> model = digits_cnn()
    >>> found = cl.concepts(model, "features.4", digits_dataset("test"), 3, importance=False, progress=False)
    >>> res = concept_pictures(model, found.layer, found.bank, normalize=None, steps=4)
    >>> res.image.shape, res.values.shape, res.picture
    (torch.Size([3, 1, 28, 28]), torch.Size([3]), None)
    >>> res.objective
    direction('features.4', <3 vectors of 16>, cossim_pow=1)

References:
    Olah et al., "The Building Blocks of Interpretability", Distill 2018 (neuron groups drawn as
    directions). https://distill.pub/2018/building-blocks/
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from convlens.core.checks import check_model, check_shape
from convlens.core.inputs import ForwardArgsLike, guess_input_shape
from convlens.core.layers import LayerSpec, resolve_layer, unwrap
from convlens.core.layouts import ReshapeSpec
from convlens.errors import InvalidArgumentError, InvalidTypeError
from convlens.featureviz.colour import resolve_normalize
from convlens.featureviz.maximize import ActivationMaximizer, MaximizationResult, Normalize
from convlens.featureviz.objectives import direction

__all__ = ["concept_pictures"]

#: The value range of the input without ``normalize``: the digits' (0 is no ink), as the atlas draws.
_PIXELS = (0.0, 1.0)


def concept_pictures(
    model: nn.Module,
    layer: LayerSpec,
    bank: Tensor,
    *,
    input_shape: Sequence[int] | None = None,
    normalize: Normalize | None = "imagenet",
    steps: int = 128,
    seed: int = 0,
    lr: float | None = None,
    cossim_pow: float = 1.0,
    reshape: ReshapeSpec = None,
    forward_args: ForwardArgsLike = None,
) -> MaximizationResult:
    """One picture per concept (row of ``bank``): the input that points ``layer`` along it.

    Image ``i`` maximizes ``direction(layer, bank[i], cossim_pow=cossim_pow)``: the mean over the
    layer's positions of ``a . bank[i]``, each weighted by ``max(0.1, cos(a, bank[i])) ** cossim_pow``
    (:func:`~convlens.featureviz.objectives.direction`), all rows in one batched
    :class:`~convlens.featureviz.maximize.ActivationMaximizer` run.

    ``cossim_pow=1`` (the default) is Lucid's choice for neuron groups, and it drew the more distinct
    pictures on the trained digits CNN (``features.4``, the bank of :func:`convlens.concepts`, 128
    steps, 4 seeds): coded back by the bank (:meth:`convlens.ConceptsResult.transform`), a picture's
    own concept holds 50% of its coefficients with the cosine against 45% with the plain dot product
    (``cossim_pow=0``) for 6 concepts, 38% against 35% for 8, and leads the next concept by 31 points
    against 23 (13 against 9). The plain dot product also pays for exciting every channel a concept
    touches, shared or not; the cosine asks for the concept's own mix of channels.

    Args:
        model: Any ``nn.Module``; run in eval mode and left as found (hooks, flags), also on error.
        layer: The layer the bank lives in: a qualified name or the module.
        bank: ``(n, C)``: ``n`` directions in the layer's ``C`` channels (after ``reshape``), such
            as :attr:`convlens.ConceptsResult.bank`. Rows need not have unit length (each picture's
            value scales with its row's).
        input_shape: One input, ``(1, C, H, W)``; the pictures are ``(n, C, H, W)``. None: the
            model's declared ``input_shape`` (the digits CNN's ``(1, 1, 28, 28)``), else
            ``(1, 3, 224, 224)`` for a model whose first convolution reads 3 channels.
        normalize: The preprocessing the model expects (``"imagenet"``, ``"lecture"`` or
            ``(mean, std)``): pictures in [0, 1] RGB through the recommended recipe. None: the
            model's own input values, bounded to [0, 1] (a 1-channel model such as the digits CNN,
            whose input is not an RGB picture).
        steps: Optimization steps (the atlas's 128 by default).
        seed: Seeds the initial images and the random transforms; the same seed, the same pictures.
        lr: Adam's learning rate; None: the parameterization's default.
        cossim_pow: The power of the floored cosine in the objective; 0: the plain dot product.
        reshape: How the layer's output becomes ``(N, C, *spatial)``, as for
            :func:`~convlens.featureviz.objectives.channel` (the reshape the bank was fitted under).
        forward_args: The model's other forward arguments after the input (a tuple, a dict or
            :class:`convlens.ForwardArgs`), passed on every forward as they are; a tensor among them
            that follows the batch needs ``n`` rows.

    Returns:
        A :class:`~convlens.featureviz.maximize.MaximizationResult`: ``image`` ``(n, C, H, W)``
        (the model's input), ``picture`` the pictures in [0, 1] with ``normalize`` (None without),
        ``values`` each picture's final objective, ``history`` the mean objective per step.

    Raises:
        InvalidTypeError: ``bank`` not a tensor; ``model`` not a module.
        InvalidArgumentError: ``bank`` not ``(n, C)``, not finite or with a row of zeros; a row length
            that is not the layer's number of channels (both named); ``normalize`` given for an input
            that does not have 3 channels (pass ``normalize=None``); ``input_shape`` not for one
            input; a negative ``cossim_pow``; ``steps`` below 1.
        LayerNotFoundError: A layer the model does not have (the nearest is named).
        UnsupportedModelError: A quantized model (no gradients) or one on the ``meta`` device.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
        >>> res = concept_pictures(net, "1", torch.rand(4, 8), input_shape=(1, 3, 32, 32), steps=4)
        >>> res.picture.shape, bool(0 <= res.picture.min() and res.picture.max() <= 1)
        (torch.Size([4, 3, 32, 32]), True)
    """
    check_model(model)
    if not isinstance(bank, Tensor):
        raise InvalidTypeError(
            f"bank must be a tensor (n, C), one concept per row (ConceptsResult.bank); got {type(bank).__name__}."
        )
    if bank.dim() != 2 or bank.shape[0] == 0:
        raise InvalidArgumentError(
            f"bank must be (n, C), one concept per row, n >= 1: concept_pictures draws one picture per "
            f"row; got shape {tuple(bank.shape)}."
        )
    key = resolve_layer(model, layer).key
    one = _one_input(model, input_shape)
    picture = normalize is not None
    if picture and one[1] != 3:
        try:
            resolve_normalize(normalize, one[1])
        except InvalidArgumentError as err:
            raise InvalidArgumentError(
                f"normalize={normalize!r} draws RGB pictures; the input {one} has {one[1]} channel"
                f"{'s' if one[1] != 1 else ''}. Pass normalize=None to optimize the model's own input "
                "values in [0, 1] (the digits CNN's), or (mean, std) with one value per channel."
            ) from err
    maximizer = ActivationMaximizer(
        model,
        direction(key, bank, cossim_pow=cossim_pow, reshape=reshape),
        input_shape=(int(bank.shape[0]), *one[1:]),
        steps=steps,
        lr=lr,
        seed=seed,
        normalize=normalize,
        value_range=None if picture else _PIXELS,
        forward_args=forward_args,
    )
    return maximizer.run()


def _one_input(model: nn.Module, input_shape: Sequence[int] | None) -> tuple[int, ...]:
    """One input, batch of 1 first: ``input_shape`` checked, or guessed as NeuronVisualizer does."""
    if input_shape is not None:
        shape = check_shape("input_shape", input_shape)
        if shape[0] != 1:
            raise InvalidArgumentError(
                f"input_shape is one input, batch of 1 first, like (1, 3, 224, 224); the batch is one "
                f"picture per concept. Got {shape}."
            )
        return shape
    return guess_input_shape(unwrap(model), who="concept_pictures")
