"""concept_pictures: one picture per concept of a bank, in one batched maximization, the house's recipe."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import convlens as cl
from convlens.errors import InvalidArgumentError, InvalidTypeError, LayerNotFoundError
from convlens.featureviz.concept_pictures import concept_pictures
from convlens.featureviz.maximize import ActivationMaximizer
from convlens.featureviz.objectives import direction
from convlens.models.digits import DigitsCNN
from helpers import exact
from invariants import assert_unchanged, global_hook_counts, snapshot


def rectified_last_conv(model: nn.Module) -> str:
    """The layer after the model's last conv layer (its ReLU): nonnegative, where NMF concepts live."""
    names = [(info.name, info.type) for info in cl.list_layers(model) if info.leaf]
    last = max(i for i, (_, kind) in enumerate(names) if kind == "Conv2d")
    assert names[last + 1][1] == "ReLU"
    return names[last + 1][0]


def test_each_concept_picture_is_the_best_picture_for_its_own_concept(
    digits: DigitsCNN, test_set: torch.utils.data.TensorDataset
) -> None:
    layer = rectified_last_conv(digits)
    assert layer == "features.4"  # the ReLU of features.3
    found = cl.concepts(digits, layer, test_set, 6, importance=False, keep_inputs=False, progress=False)
    res = concept_pictures(digits, found.layer, found.bank, normalize=None, steps=32)
    assert res.image.shape == (6, 1, 28, 28)
    assert res.picture is None
    assert res.image.min() >= 0  # the digits' [0, 1]
    assert res.image.max() <= 1
    # scores[i, k]: concept k's objective on picture i, the same objective the pictures ascended
    acts = {layer: cl.LayerTap(digits, [layer]).run(res.image)[layer]}
    scores = torch.stack(
        [direction(layer, found.bank[k], cossim_pow=1)(acts, res.image) for k in range(6)], dim=1
    )
    torch.testing.assert_close(scores.diagonal(), res.values)
    # for every concept, the picture drawn for it raises its objective more than any other picture does
    assert scores.argmax(dim=0).tolist() == list(range(6))
    assert res.history[-1] > res.history[0]


def test_the_recipe_is_the_maximizers_own_in_one_batch() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Conv2d(6, 5, 3))
    bank = torch.rand(3, 6)
    # picture space: the recommended recipe (fft, decorrelated colours, crops), one image per row
    res = concept_pictures(net, "1", bank, input_shape=(1, 3, 24, 24), steps=3, seed=2)
    same = ActivationMaximizer(
        net,
        direction("1", bank, cossim_pow=1),
        input_shape=(3, 3, 24, 24),
        steps=3,
        seed=2,
        normalize="imagenet",
    )
    assert (same.param, same.transforms, same.decorrelate) == ("fft", "standard", True)
    expected = same.run()
    assert res.picture is not None
    assert expected.picture is not None
    assert torch.equal(res.picture, expected.picture)
    assert torch.equal(res.image, expected.image)
    assert repr(res.objective) == "direction('1', <3 vectors of 6>, cossim_pow=1)"
    # the model's own values: bounded pixels in [0, 1], no transforms (the atlas's digits recipe)
    res = concept_pictures(net, "1", bank, input_shape=(1, 3, 24, 24), steps=3, normalize=None, cossim_pow=0)
    expected = ActivationMaximizer(
        net, direction("1", bank), input_shape=(3, 3, 24, 24), steps=3, value_range=(0.0, 1.0)
    ).run()
    assert torch.equal(res.image, expected.image)
    assert res.picture is None


def test_the_same_seed_gives_the_same_pictures(digits: DigitsCNN) -> None:
    bank = torch.rand(4, 16, generator=torch.Generator().manual_seed(0))
    first = concept_pictures(digits, "features.3", bank, normalize=None, steps=4, seed=5)
    again = concept_pictures(digits, "features.3", bank, normalize=None, steps=4, seed=5)
    other = concept_pictures(digits, "features.3", bank, normalize=None, steps=4, seed=6)
    assert torch.equal(first.image, again.image)
    assert torch.equal(first.history, again.history)
    assert not torch.equal(first.image, other.image)


def test_a_layer_given_as_a_module_and_a_guessed_input(digits: DigitsCNN) -> None:
    bank = torch.rand(2, 16, generator=torch.Generator().manual_seed(1))
    res = concept_pictures(digits, digits.features[3], bank, normalize=None, steps=2)
    assert res.image.shape == (2, 1, 28, 28)  # the digits CNN declares its input
    assert repr(res.objective) == "direction('features.3', <2 vectors of 16>, cossim_pow=1)"


class Failing(nn.Module):
    """A small CNN with BatchNorm and Dropout whose forward can fail on real tensors (not on meta).

    It fails before the layer the pictures read: the maximizer stops the forward right after that layer.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.fail = False

    def forward(self, x: Tensor) -> Tensor:
        h: Tensor = self.conv(x)
        if self.fail and not h.is_meta:
            raise RuntimeError("boom in forward")
        out: Tensor = self.drop(self.bn(h).relu())
        return out


@pytest.mark.parametrize("fail", [False, True], ids=["success", "exception"])
def test_the_model_is_left_as_found(fail: bool) -> None:
    torch.manual_seed(0)
    model = Failing().train()
    model.bn.eval()  # mixed flags must come back exactly
    model.bn.bias.requires_grad_(False)
    model.conv.weight.grad = torch.full_like(model.conv.weight, 0.5)
    model.fail = fail
    before, hooks = snapshot(model), global_hook_counts()
    bank = torch.rand(2, 4)
    if fail:
        with pytest.raises(RuntimeError, match="boom in forward"):
            concept_pictures(model, "bn", bank, input_shape=(1, 3, 8, 8), steps=2)
    else:
        concept_pictures(model, "bn", bank, input_shape=(1, 3, 8, 8), steps=2)
    assert_unchanged(model, before)
    assert global_hook_counts() == hooks
    assert torch.is_grad_enabled()


def test_bad_arguments_are_refused_before_any_work(digits: DigitsCNN) -> None:
    real: list[bool] = []
    handle = digits.register_forward_pre_hook(lambda module, args: real.append(not args[0].is_meta))
    try:
        with pytest.raises(InvalidTypeError, match=r"bank must be a tensor \(n, C\).*got list"):
            concept_pictures(digits, "features.3", [[1.0] * 16], normalize=None)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgumentError, match=r"bank must be \(n, C\).*got shape \(16,\)"):
            concept_pictures(digits, "features.3", torch.rand(16), normalize=None)
        with pytest.raises(InvalidArgumentError, match=r"got shape \(0, 16\)"):
            concept_pictures(digits, "features.3", torch.rand(0, 16), normalize=None)
        with pytest.raises(
            InvalidArgumentError,
            match=exact(
                "direction's vector has 10 values, but layer 'features.3' has 16 channels: give one value per "
                "channel."
            ),
        ):
            concept_pictures(digits, "features.3", torch.rand(3, 10), normalize=None)
        with pytest.raises(InvalidArgumentError, match="vector is all zeros"):
            concept_pictures(digits, "features.3", torch.zeros(2, 16), normalize=None)
        with pytest.raises(
            InvalidArgumentError,
            match=r"normalize='imagenet' draws RGB pictures; the input \(1, 1, 28, 28\) has 1 channel\. "
            r"Pass normalize=None",
        ):
            concept_pictures(digits, "features.3", torch.rand(3, 16))
        with pytest.raises(InvalidArgumentError, match=r"input_shape is one input, batch of 1 first"):
            concept_pictures(
                digits, "features.3", torch.rand(3, 16), input_shape=(3, 1, 28, 28), normalize=None
            )
        with pytest.raises(LayerNotFoundError, match=r"has no layer 'features\.33'\. Did you mean"):
            concept_pictures(digits, "features.33", torch.rand(3, 16), normalize=None)
        with pytest.raises(InvalidArgumentError, match="cossim_pow must be a finite number >= 0"):
            concept_pictures(digits, "features.3", torch.rand(3, 16), normalize=None, cossim_pow=-1)
        with pytest.raises(InvalidArgumentError, match="steps must be"):
            concept_pictures(digits, "features.3", torch.rand(3, 16), normalize=None, steps=0)
    finally:
        handle.remove()
    assert not any(real)  # nothing ran on real tensors
    linear = nn.Sequential(nn.Flatten(), nn.Linear(12, 4))
    with pytest.raises(
        InvalidArgumentError, match="concept_pictures cannot guess the input size of Sequential"
    ):
        concept_pictures(linear, "1", torch.rand(2, 4))
