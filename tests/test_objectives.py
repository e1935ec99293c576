from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from convlens.core.layouts import Layout
from convlens.core.tap import LayerTap
from convlens.errors import InvalidArgumentError, InvalidTypeError
from convlens.featureviz.objectives import (
    OUTPUT,
    Objective,
    channel,
    class_logit,
    direction,
    direction_neuron,
    diversity,
    l1,
    neuron,
    total_variation,
)
from helpers import exact

# Hand-made activations: conv (N=2, C=3, 2x3), fc (N=2, 4 units), the model output (N=2, 5 classes).
CONV = torch.arange(36.0).view(2, 3, 2, 3)
FC = torch.tensor([[1.0, -2.0, 3.0, 4.0], [0.5, 0.25, -1.0, 8.0]])
LOGITS = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0], [10.0, 11.0, 12.0, 13.0, 14.0]])
ACTS = {"conv": CONV, "fc": FC, OUTPUT: LOGITS}
IMAGE = torch.tensor([[[[1.0, -1.0], [0.0, 2.0]]], [[[0.0, 0.0], [0.0, -4.0]]]])  # (2, 1, 2, 2)


def values(obj: Objective) -> list[float]:
    out = obj(ACTS, IMAGE)
    assert out.shape == (2,)
    return out.tolist()


# -- leaves: values by hand ------------------------------------------------------------


def test_channel_is_the_mean_over_positions() -> None:
    # sample 0, channel 1: 6..11 -> 8.5; sample 1, channel 1: 24..29 -> 26.5
    assert values(channel("conv", 1)) == [8.5, 26.5]
    assert values(channel("fc", 2)) == [3.0, -1.0]  # no positions: the unit's value


def test_channel_one_index_per_sample() -> None:
    # sample 0 channel 0 (0..5 -> 2.5), sample 1 channel 2 (30..35 -> 32.5)
    assert values(channel("conv", [0, 2])) == [2.5, 32.5]
    assert values(channel("conv", range(2))) == [2.5, 26.5]
    assert values(channel("fc", torch.tensor([3, 0]))) == [4.0, 0.5]
    with pytest.raises(InvalidArgumentError, match="lists 3 indices for a batch of 2"):
        channel("conv", [0, 1, 2])(ACTS, IMAGE)


def test_neuron_centre_and_position() -> None:
    # conv maps are 2x3: the centre is (1, 1), flat offset 4 in the map
    assert values(neuron("conv", 2)) == [CONV[0, 2, 1, 1].item(), CONV[1, 2, 1, 1].item()]
    assert values(neuron("conv", 0, position=(0, 2))) == [2.0, 20.0]
    assert values(neuron("fc", 1)) == [-2.0, 0.25]
    with pytest.raises(InvalidArgumentError, match="no positions"):
        neuron("fc", 1, position=(0, 0))(ACTS, IMAGE)


def test_class_logit_l1_total_variation() -> None:
    assert values(class_logit(3)) == [3.0, 13.0]
    assert values(class_logit([4, 0])) == [4.0, 10.0]
    assert values(l1()) == [1.0, 1.0]  # mean |x|: (1 + 1 + 0 + 2) / 4 and 4 / 4
    # sample 0: rows |0-1| + |2-(-1)| -> mean 2; cols |-1-1| + |2-0| -> mean 2; sample 1: 2 + 2
    assert values(total_variation()) == [4.0, 4.0]


# -- the algebra ---------------------------------------------------------------------


def test_repr_strings() -> None:
    assert repr(channel("features.10", 5) - 1e-3 * l1()) == "channel('features.10', 5) - 0.001 * l1()"
    assert repr(0.5 * neuron("classifier.4", 7) + class_logit(3)) == (
        "0.5 * neuron('classifier.4', 7) + class_logit(3)"
    )
    a, b = channel("a", 1), class_logit(2)
    assert repr(-(a + b)) == "-channel('a', 1) - class_logit(2)"
    assert repr(2 * (a - b)) == "2 * channel('a', 1) - 2 * class_logit(2)"
    assert repr(a / 4) == "0.25 * channel('a', 1)"
    assert repr(-a) == "-channel('a', 1)"
    assert repr(sum([a, b, l1()])) == "channel('a', 1) + class_logit(2) + l1()"
    assert repr(channel("x", [1, 2])) == "channel('x', [1, 2])"
    assert repr(neuron("x", 3, position=(0, 1))) == "neuron('x', 3, position=(0, 1))"
    assert repr(neuron("x", 3, position=4)) == "neuron('x', 3, position=4)"
    custom = Objective(lambda acts, image: image.sum((1, 2, 3)), name="x - y")
    assert repr(3 * custom) == "3 * (x - y)"


def test_layers_sets() -> None:
    obj = channel("features.10", 5) - 1e-3 * l1() + 0.5 * neuron("classifier.4", 1) + class_logit(0)
    assert obj.layers == frozenset({"features.10", "classifier.4"})  # layers only: the output is apart
    assert obj.reads_output
    assert not (channel("features.10", 5) - l1()).reads_output
    assert l1().layers == frozenset()
    assert class_logit(1).layers == frozenset()
    assert class_logit(1).reads_output
    custom = Objective(
        lambda acts, image: acts[OUTPUT][:, 0], name="first()", layers=frozenset({OUTPUT, "fc"})
    )
    assert (custom.layers, custom.reads_output) == (frozenset({"fc"}), True)
    assert OUTPUT == ""  # the root module's name: no layer can be called that


def test_arithmetic_values() -> None:
    a, b = channel("conv", 1), neuron("fc", 3)
    expected = [2 * 8.5 - 0.5 * 4.0 - 3 * 1.0, 2 * 26.5 - 0.5 * 8.0 - 3 * 1.0]
    assert values(2 * a - b / 2 - 3 * l1()) == expected
    assert values(-a) == [-8.5, -26.5]
    assert values(a + 0) == values(0 + a) == values(a - 0) == [8.5, 26.5]
    total = sum([a, b])
    assert isinstance(total, Objective)
    assert values(total) == [12.5, 34.5]
    assert (a + 0) is a


@settings(max_examples=40, deadline=None)
@given(
    w1=st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False),
    w2=st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False),
    d=st.floats(0.01, 100),
)
def test_combination_is_linear(w1: float, w2: float, d: float) -> None:
    a, b = channel("conv", 2), class_logit(1)
    got = (w1 * a + b * w2 - a / d)(ACTS, IMAGE)
    want = w1 * a(ACTS, IMAGE) + w2 * b(ACTS, IMAGE) - a(ACTS, IMAGE) / d
    torch.testing.assert_close(got, want)


def test_unsupported_operands_return_not_implemented() -> None:
    a, b = channel("conv", 1), l1()
    assert a.__mul__(b) is NotImplemented
    assert a.__truediv__(b) is NotImplemented
    assert a.__add__(1.0) is NotImplemented
    assert a.__radd__("x") is NotImplemented
    assert a.__mul__(True) is NotImplemented
    assert a.__mul__(torch.tensor(2.0)) is NotImplemented
    with pytest.raises(TypeError):
        _ = a * b
    with pytest.raises(TypeError):
        _ = a + 1
    with pytest.raises(TypeError):
        _ = 2 / a  # type: ignore[operator]
    with pytest.raises(TypeError):
        _ = a @ b  # type: ignore[operator]


def test_bad_scalars() -> None:
    a = channel("conv", 1)
    with pytest.raises(InvalidArgumentError, match="by zero"):
        _ = a / 0
    with pytest.raises(InvalidArgumentError, match="finite"):
        _ = a * math.inf


def test_objective_is_frozen() -> None:
    a = channel("conv", 1)
    with pytest.raises(AttributeError):
        a.name = "other"  # type: ignore[misc]


# -- validation --------------------------------------------------------------------------


def test_construction_errors() -> None:
    with pytest.raises(InvalidTypeError, match="qualified name"):
        channel(nn.ReLU(), 1)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match=">= 0"):
        channel("conv", -1)
    with pytest.raises(InvalidTypeError, match="int or a sequence"):
        neuron("conv", 1.5)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="empty"):
        channel("conv", [])
    with pytest.raises(InvalidTypeError, match="must hold ints"):
        class_logit([1, "2"])  # type: ignore[list-item]
    with pytest.raises(InvalidArgumentError, match="position"):
        neuron("conv", 1, position=(-1, 0))
    with pytest.raises(InvalidTypeError, match="callable"):
        Objective(3, name="x")  # type: ignore[arg-type]
    with pytest.raises(InvalidTypeError, match="qualified names"):
        Objective(lambda acts, image: image, name="x", layers={1})  # type: ignore[arg-type]


def test_validate_against_shapes() -> None:
    shapes = {"features.10": (1, 256, 13, 13), "classifier.0": (1, 64), OUTPUT: (1, 10)}
    (channel("features.10", 255) + neuron("classifier.0", 63) + class_logit(9)).validate(shapes)
    with pytest.raises(
        InvalidArgumentError,
        match=r"channel 256 is out of range: layer 'features.10' has 256 channels \(0 to 255\)",
    ):
        channel("features.10", 256).validate(shapes)
    with pytest.raises(InvalidArgumentError, match=r"layer 'classifier\.0' has 64 units"):
        neuron("classifier.0", 64).validate(shapes)
    with pytest.raises(
        InvalidArgumentError, match=r"class 10 is out of range: the model output has 10 scores"
    ):
        class_logit(10).validate(shapes)
    with pytest.raises(InvalidArgumentError, match="outside the"):
        neuron("features.10", 0, position=(13, 0)).validate(shapes)
    with pytest.raises(InvalidArgumentError, match="without positions"):
        neuron("classifier.0", 0, position=(0, 0)).validate(shapes)
    with pytest.raises(InvalidArgumentError, match="lists 2 indices for a batch of 1"):
        channel("features.10", [0, 1]).validate(shapes)
    with pytest.raises(InvalidArgumentError, match=r"needs a model output of shape \(N, classes\)"):
        class_logit(0).validate({OUTPUT: (1, 10, 4, 4)})
    # Layers the shapes do not mention are not judged (the maximizer passes every one it reads).
    channel("elsewhere", 10**6).validate(shapes)


# -- diversity: style (Gram) dissimilarity across the batch -----------------------------------


def unit_grams(acts: torch.Tensor) -> torch.Tensor:
    """Each image's Gram matrix over positions, flattened and scaled to unit norm, by hand."""
    flat = acts.reshape(acts.shape[0], acts.shape[1], -1).double()
    grams: torch.Tensor = torch.einsum("ncp,ndp->ncd", flat, flat).flatten(1)
    unit: torch.Tensor = grams / grams.norm(dim=1, keepdim=True)
    return unit


def test_diversity_of_identical_images_is_minus_one() -> None:
    acts = torch.rand(1, 4, 3, 3, generator=torch.Generator().manual_seed(0)).expand(3, 4, 3, 3)
    torch.testing.assert_close(diversity("conv")({"conv": acts}, torch.zeros(3)), torch.full((3,), -1.0))
    # Scaling an image does not change its style.
    scaled = acts * torch.tensor([1.0, 10.0, 0.1]).view(3, 1, 1, 1)
    torch.testing.assert_close(diversity("conv")({"conv": scaled}, torch.zeros(3)), torch.full((3,), -1.0))


def test_diversity_of_images_on_disjoint_channels_is_zero() -> None:
    acts = torch.zeros(3, 3, 2, 2)
    for i in range(3):
        acts[i, i] = torch.rand(2, 2, generator=torch.Generator().manual_seed(i)) + 0.1
    assert diversity("conv")({"conv": acts}, torch.zeros(3)).tolist() == [0.0, 0.0, 0.0]


def test_diversity_is_minus_the_mean_cosine_similarity_to_the_others() -> None:
    acts = torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(1))
    grams = unit_grams(acts)
    similarity = grams @ grams.T
    want = torch.stack([-(similarity[i].sum() - similarity[i, i]) / 3 for i in range(4)])
    got = diversity("conv")({"conv": acts}, torch.zeros(4))
    assert got.shape == (4,)
    torch.testing.assert_close(got.double(), want)
    assert bool((got >= -1 - 1e-6).all())
    assert bool((got <= 1 + 1e-6).all())


def lucent_diversity(acts: torch.Tensor) -> float:
    """Lucent's ``objectives.diversity``: minus the sum over pairs i != j of <G_i, G_j>, over the batch size."""
    grams = unit_grams(acts)
    n = acts.shape[0]
    return -float(sum((grams[i] * grams[j]).sum() for i in range(n) for j in range(n) if j != i)) / n


@pytest.mark.parametrize("n", [2, 3, 5])
def test_diversity_times_n_minus_one_is_lucents(n: int) -> None:
    acts = torch.randn(n, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    got = diversity("conv")({"conv": acts}, torch.zeros(n))
    assert float(got.mean()) * (n - 1) == pytest.approx(lucent_diversity(acts), rel=1e-5)


def test_diversity_of_a_batch_of_one_is_zero_and_differentiable() -> None:
    acts = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(3), requires_grad=True)
    value = diversity("conv")({"conv": acts}, torch.zeros(1))
    assert value.tolist() == [0.0]
    assert value.requires_grad
    (grad,) = torch.autograd.grad(value.sum(), [acts])
    assert torch.equal(grad, torch.zeros_like(acts))
    # All-zero activations (a dead layer) give finite values and gradients, not NaN.
    dead = torch.zeros(2, 3, 4, 4, requires_grad=True)
    value = diversity("conv")({"conv": dead}, torch.zeros(2))
    (grad,) = torch.autograd.grad(value.sum(), [dead])
    assert bool(torch.isfinite(value).all())
    assert bool(torch.isfinite(grad).all())


def test_diversity_on_a_linear_layer() -> None:
    # (N, F): the Gram matrix of one position is the outer product f f^T, so <G_i, G_j> = cos(f_i, f_j)^2.
    got = diversity("fc")(ACTS, IMAGE)
    f = FC.double()
    cos = torch.nn.functional.cosine_similarity(f[0], f[1], dim=0)
    torch.testing.assert_close(got.double(), -(cos**2).repeat(2))


def test_diversity_repr_and_layers() -> None:
    obj = diversity("conv")
    assert repr(obj) == "diversity('conv')"
    assert obj.layers == frozenset({"conv"})
    assert not obj.reads_output
    combined = channel("conv", 1) + 2 * diversity("fc")
    assert repr(combined) == "channel('conv', 1) + 2 * diversity('fc')"
    assert combined.layers == frozenset({"conv", "fc"})
    with pytest.raises(InvalidTypeError):
        diversity(3)  # type: ignore[arg-type]


def test_diversity_makes_a_batch_of_images_differ_in_style() -> None:
    from convlens.featureviz.maximize import ActivationMaximizer

    net = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU())
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)

    def similarity(weight: float) -> float:
        obj = channel("1", 0) + weight * diversity("1") if weight else channel("1", 0)
        res = ActivationMaximizer(net, obj, input_shape=(2, 3, 12, 12), steps=10, lr=0.1, seed=0).run()
        with torch.no_grad():
            grams = unit_grams(net(res.image))
        return float(grams[0] @ grams[1])

    # Both images start as nearly flat (0.01 * N(0, 1) noise): alone, the channel makes them alike.
    alike, apart = similarity(0.0), similarity(5.0)
    assert alike > 0.99
    assert apart < alike - 0.2  # seeds 0 to 3 give 0.03 to 0.73 against 1.0


# -- reshape= (issue 18): channels last, tokens, multi-tensor layers --------------------------

NHWC = CONV.permute(0, 2, 3, 1).contiguous()  # the same values, channels last: (2, 2, 3, 3)


def test_channel_and_neuron_read_a_channels_last_output_as_its_channels_first_twin() -> None:
    for c in range(3):
        torch.testing.assert_close(
            channel("s", c, reshape="channels_last")({"s": NHWC}, IMAGE), channel("conv", c)(ACTS, IMAGE)
        )
        torch.testing.assert_close(
            neuron("s", c, position=(1, 2), reshape="channels_last")({"s": NHWC}, IMAGE),
            CONV[:, c, 1, 2],
        )


def test_reshape_counts_channels_after_the_reshape() -> None:
    shapes = {"s": tuple(NHWC.shape)}
    channel("s", 2, reshape="channels_last").validate(shapes)
    with pytest.raises(
        InvalidArgumentError,
        match=r"^channel 3 is out of range: layer 's' has 3 channels after reshape='channels_last' \(0 to 2\)\.$",
    ):
        channel("s", 3, reshape="channels_last").validate(shapes)
    with pytest.raises(InvalidArgumentError, match=r"position \(0, 3\) is outside the \(2, 3\) feature map"):
        neuron("s", 0, position=(0, 3), reshape="channels_last").validate(shapes)
    tokens = {"vit": (1, 1 + 49, 192)}  # a class token and a 7x7 grid
    channel("vit", 191, reshape="vit").validate(tokens)
    neuron("vit", 0, position=(6, 6), reshape="vit").validate(tokens)
    with pytest.raises(InvalidArgumentError, match="has 192 channels after reshape='vit'"):
        channel("vit", 192, reshape="vit").validate(tokens)


def test_a_layout_part_reads_another_tensor_of_a_tuple() -> None:
    low = torch.arange(8.0).view(1, 2, 2, 2)
    both = {"stage": (CONV[:1], low)}
    assert channel("stage", 1, reshape=Layout(part=1))(both, IMAGE).tolist() == [5.5]  # type: ignore[arg-type]
    assert channel("stage", 1)(both, IMAGE).tolist() == [float(CONV[0, 1].mean())]  # type: ignore[arg-type]


def test_reshape_is_spelled_in_the_repr_and_checked_when_built() -> None:
    assert repr(channel("s", 1, reshape="channels_last")) == "channel('s', 1, reshape='channels_last')"
    assert (
        repr(neuron("s", 1, reshape=Layout(part=1))) == "neuron('s', 1, reshape=Layout(part=1, reshape=None))"
    )
    assert repr(channel("s", 1, reshape=lambda t: t)) == "channel('s', 1, reshape=<callable>)"
    assert repr(channel("s", 1, reshape=None)) == "channel('s', 1)"
    with pytest.raises(InvalidArgumentError, match="Did you mean 'channels_last'"):
        channel("s", 1, reshape="channel_last")  # type: ignore[arg-type]
    with pytest.raises(InvalidTypeError, match="reshape must be"):
        neuron("s", 1, reshape=3)  # type: ignore[arg-type]


def test_layouts_follow_the_algebra_one_per_layer() -> None:
    obj = channel("s", 1, reshape="channels_last") - 0.5 * neuron("s", 2, reshape="channels_last") + l1()
    assert dict(obj.layouts) == {"s": Layout(reshape="channels_last")}
    assert obj.layers == frozenset({"s"})
    with pytest.raises(InvalidArgumentError, match=r"reads each layer through one layout.*'s'"):
        channel("s", 1, reshape="channels_last") + channel("s", 2)
    with pytest.raises(InvalidTypeError, match="layouts must map layers the objective reads"):
        Objective(lambda a, i: i.sum((1, 2, 3)), name="x()", layers=frozenset({"a"}), layouts={"b": Layout()})


def test_diversity_reads_a_channels_last_layer_through_reshape() -> None:
    nhwc = diversity("s", reshape="channels_last")
    assert repr(nhwc) == "diversity('s', reshape='channels_last')"
    assert dict(nhwc.layouts) == {"s": Layout(reshape="channels_last")}
    torch.testing.assert_close(nhwc({"s": NHWC}, IMAGE), diversity("conv")({"conv": CONV}, IMAGE))
    assert dict(diversity("s").layouts) == {"s": Layout()}  # read as returned, and said so
    both = channel("s", 1, reshape="channels_last") + 2 * diversity("s", reshape="channels_last")
    assert dict(both.layouts) == {"s": Layout(reshape="channels_last")}
    with pytest.raises(
        InvalidArgumentError, match=r"reads 's' two ways: reshape='channels_last', and as returned"
    ):
        channel("s", 1, reshape="channels_last") + diversity("s")  # never one term at dim 1, silently


def test_the_maximizer_refuses_diversity_over_a_channels_last_layer_without_reshape() -> None:
    from convlens.featureviz.maximize import ActivationMaximizer

    swin_like = nn.Sequential(nn.Linear(3, 8), nn.LayerNorm(8))  # (N, H, W, 3) to (N, H, W, 8)
    with pytest.raises(
        InvalidArgumentError, match=r"ActivationMaximizer reads channels.*layer '1'.*channels_last"
    ):
        ActivationMaximizer(swin_like, diversity("1"), input_shape=(2, 6, 6, 3), steps=1)
    objective = channel("1", 3, reshape="channels_last") + 0.5 * diversity("1", reshape="channels_last")
    result = ActivationMaximizer(swin_like, objective, input_shape=(2, 6, 6, 3), steps=1).run()
    assert result.values.shape == (2,)


# -- direction and direction_neuron (issue 19): Lucid's direction objectives -----------------------


def tiny_activations() -> torch.Tensor:
    """A 1x1 conv with hand-set weights on a known input: activations known by hand.

    Input (1, 2, 1, 2): position 0 holds (1, 2), position 1 holds (0, 4). The conv's three channels
    are x0, x1 and x0 + x1, so the activation vectors are a0 = (1, 2, 3) and a1 = (0, 4, 4).
    """
    conv = nn.Conv2d(2, 3, 1, bias=False)
    net = nn.Sequential(conv)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]).view(3, 2, 1, 1))
    x = torch.tensor([[[[1.0, 0.0]], [[2.0, 4.0]]]])
    acts = LayerTap(net, ["0"]).run(x)["0"]
    assert acts.flatten(2)[0].T.tolist() == [[1.0, 2.0, 3.0], [0.0, 4.0, 4.0]]
    return acts


def test_direction_is_the_dot_product_averaged_over_positions() -> None:
    acts = {"conv": tiny_activations()}
    # a0 . v = 1 - 3 = -2, a1 . v = 0 - 4 = -4: the mean is -3
    assert direction("conv", [1.0, 0.0, -1.0])(acts, IMAGE).tolist() == [-3.0]
    # (2, 0, 0): 2 and 0, mean 1; a vector's length scales the value
    assert direction("conv", torch.tensor([2.0, 0.0, 0.0]))(acts, IMAGE).tolist() == [1.0]
    # a unit axis is the channel: direction(e_c) == channel(c), on every sample
    for c in range(3):
        axis = torch.zeros(3)
        axis[c] = 1.0
        torch.testing.assert_close(direction("conv", axis)(ACTS, IMAGE), channel("conv", c)(ACTS, IMAGE))
    # a layer without positions: the dot product with the whole output
    assert direction("fc", [1.0, 0.0, 0.0, 0.5])(ACTS, IMAGE).tolist() == [3.0, 4.5]


def test_direction_with_cossim_weights_each_position_by_its_floored_cosine() -> None:
    acts = {"conv": tiny_activations()}
    # v = (1, 1, 0), |v| = sqrt(2): a0 . v = 3, |a0| = sqrt(14); a1 . v = 4, |a1| = sqrt(32)
    cos0, cos1 = 3 / math.sqrt(28), 4 / math.sqrt(64)
    got = direction("conv", [1.0, 1.0, 0.0], cossim_pow=1)(acts, IMAGE)
    # Lucid adds 1e-4 to both lengths: a relative change of about 1e-4
    torch.testing.assert_close(got, torch.tensor([(3 * cos0 + 4 * cos1) / 2]), rtol=1e-3, atol=0)
    got = direction("conv", [1.0, 1.0, 0.0], cossim_pow=2)(acts, IMAGE)
    torch.testing.assert_close(got, torch.tensor([(3 * cos0**2 + 4 * cos1**2) / 2]), rtol=1e-3, atol=0)
    # v = (-1, 0, 0): a0 . v = -1 with a negative cosine, floored at 0.1; a1 . v = 0
    away = direction("conv", [-1.0, 0.0, 0.0], cossim_pow=1)(acts, IMAGE)
    torch.testing.assert_close(away, torch.tensor([-1 * 0.1 / 2]))
    away = direction("conv", [-1.0, 0.0, 0.0], cossim_pow=3)(acts, IMAGE)
    torch.testing.assert_close(away, torch.tensor([-1 * 0.1**3 / 2]))
    # cossim_pow=0 is the plain dot product
    assert direction("conv", [1.0, 1.0, 0.0], cossim_pow=0)(acts, IMAGE).tolist() == [3.5]


def test_direction_neuron_at_the_centre_and_at_a_position() -> None:
    v = [1.0, -1.0, 0.5]
    # CONV[n, c, 1, 1] = 18 n + 6 c + 4: (4, 10, 16) and (22, 28, 34)
    assert direction_neuron("conv", v)(ACTS, IMAGE).tolist() == [4 - 10 + 8, 22 - 28 + 17]
    # (0, 2): (2, 8, 14) and (20, 26, 32)
    assert direction_neuron("conv", v, position=(0, 2))(ACTS, IMAGE).tolist() == [2 - 8 + 7, 20 - 26 + 16]
    assert direction_neuron("fc", [0.0, 1.0, 0.0, 1.0])(ACTS, IMAGE).tolist() == [2.0, 8.25]
    # a unit axis at a position is the neuron
    torch.testing.assert_close(
        direction_neuron("conv", [0.0, 0.0, 1.0], position=(1, 0))(ACTS, IMAGE),
        neuron("conv", 2, position=(1, 0))(ACTS, IMAGE),
    )
    # with the cosine: the centre of the tiny net's 1x2 grid is position 1, a1 = (0, 4, 4)
    acts = {"conv": tiny_activations()}
    got = direction_neuron("conv", [0.0, 1.0, 0.0], cossim_pow=1)(acts, IMAGE)
    torch.testing.assert_close(got, torch.tensor([4 * (4 / math.sqrt(32))]), rtol=1e-3, atol=0)


def test_direction_one_vector_per_image() -> None:
    bank = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # image 0 channel 0, image 1 channel 2
    assert direction("conv", bank)(ACTS, IMAGE).tolist() == channel("conv", [0, 2])(ACTS, IMAGE).tolist()
    assert direction_neuron("conv", bank)(ACTS, IMAGE).tolist() == [4.0, 34.0]
    # each row is its image's own objective: swapping the rows swaps the values
    swapped = direction("conv", bank.flip(0))(ACTS, IMAGE).tolist()
    assert swapped == channel("conv", [2, 0])(ACTS, IMAGE).tolist()
    # the vector is copied: changing it afterwards changes nothing
    v = torch.ones(3)
    obj = direction("conv", v)
    before = obj(ACTS, IMAGE)
    v.zero_()
    assert obj(ACTS, IMAGE).tolist() == before.tolist()


def test_direction_composes_like_every_objective() -> None:
    v = [1.0, 0.0, -1.0]
    obj = direction("conv", v) - 0.5 * channel("conv", 1) + 2 * direction_neuron("fc", [1.0, 1.0, 0.0, 0.0])
    expected = (
        direction("conv", v)(ACTS, IMAGE)
        - 0.5 * channel("conv", 1)(ACTS, IMAGE)
        + 2 * direction_neuron("fc", [1.0, 1.0, 0.0, 0.0])(ACTS, IMAGE)
    )
    torch.testing.assert_close(obj(ACTS, IMAGE), expected)
    assert obj.layers == frozenset({"conv", "fc"})
    assert repr(obj) == (
        "direction('conv', <vector of 3>) - 0.5 * channel('conv', 1) + 2 * direction_neuron('fc', <vector of 4>)"
    )
    total = sum([direction("conv", v), -direction("conv", v) / 4])
    assert isinstance(total, Objective)
    torch.testing.assert_close(total(ACTS, IMAGE), 0.75 * direction("conv", v)(ACTS, IMAGE))
    with pytest.raises(TypeError):
        direction("conv", v) * direction("conv", v)


def test_direction_repr_names_its_options() -> None:
    assert repr(direction("conv", torch.ones(2, 3), cossim_pow=1)) == (
        "direction('conv', <2 vectors of 3>, cossim_pow=1)"
    )
    assert repr(
        direction_neuron("s", [1.0, 2.0], position=(0, 1), cossim_pow=0.5, reshape="channels_last")
    ) == ("direction_neuron('s', <vector of 2>, position=(0, 1), cossim_pow=0.5, reshape='channels_last')")
    assert (
        repr(direction_neuron("seq", [1.0], position=3))
        == "direction_neuron('seq', <vector of 1>, position=3)"
    )


def test_direction_reads_a_channels_last_layer_through_reshape() -> None:
    v = torch.tensor([0.5, -1.0, 2.0])
    torch.testing.assert_close(
        direction("s", v, reshape="channels_last", cossim_pow=1)({"s": NHWC}, IMAGE),
        direction("conv", v, cossim_pow=1)(ACTS, IMAGE),
    )
    torch.testing.assert_close(
        direction_neuron("s", v, position=(1, 2), reshape="channels_last")({"s": NHWC}, IMAGE),
        direction_neuron("conv", v, position=(1, 2))(ACTS, IMAGE),
    )
    assert dict(direction("s", v, reshape="channels_last").layouts) == {"s": Layout(reshape="channels_last")}
    with pytest.raises(
        InvalidArgumentError,
        match=exact(
            "direction's vector has 3 values, but layer 's' has 96 channels after reshape='channels_last': "
            "give one value per channel."
        ),
    ):
        direction("s", v, reshape="channels_last").validate({"s": (1, 7, 7, 96)})


def test_direction_gradient_is_finite_where_the_layer_is_silent() -> None:
    # a ReLU layer's dead positions have |a| = 0: the cosine's gradient must not be nan there
    acts = torch.zeros(1, 3, 2, 2, requires_grad=True)
    value = direction("conv", [1.0, 2.0, 3.0], cossim_pow=1)({"conv": acts}, IMAGE)
    (grad,) = torch.autograd.grad(value.sum(), [acts])
    assert torch.isfinite(grad).all()
    # at a = 0 the cosine sits on its floor: d/da (a . v * 0.1) = 0.1 v, over 4 positions
    torch.testing.assert_close(grad[0, :, 0, 0], torch.tensor([1.0, 2.0, 3.0]) * 0.1 / 4)


def test_direction_errors_when_built() -> None:
    with pytest.raises(
        InvalidArgumentError, match=r"shape \(C,\).*or \(B, C\).*got torch.float32 of shape \(2, 2, 2\)"
    ):
        direction("conv", torch.ones(2, 2, 2))
    with pytest.raises(InvalidArgumentError, match=r"got torch.float32 of shape \(0,\)"):
        direction("conv", torch.ones(0))
    with pytest.raises(InvalidArgumentError, match=r"direction's vector is all zeros: it points nowhere"):
        direction("conv", [0.0, 0.0])
    with pytest.raises(InvalidArgumentError, match=r"direction_neuron's vector is all zeros \(rows \[1\]\)"):
        direction_neuron("conv", torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    with pytest.raises(InvalidArgumentError, match="must be finite"):
        direction("conv", [1.0, float("nan")])
    with pytest.raises(InvalidTypeError, match=r"direction needs a vector of numbers.*got str"):
        direction("conv", "up")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match=exact("cossim_pow must be a finite number >= 0; got -1.")):
        direction("conv", [1.0], cossim_pow=-1)
    with pytest.raises(InvalidTypeError, match="qualified name"):
        direction(nn.ReLU(), [1.0])  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match=r"position must hold ints >= 0; got \(-1, 0\)"):
        direction_neuron("conv", [1.0], position=(-1, 0))
    with pytest.raises(InvalidTypeError, match="position must be an int or a tuple of ints"):
        direction_neuron("conv", [1.0], position=1.5)  # type: ignore[arg-type]
    # an integer vector (a one-hot of ints) is read as float
    assert direction("conv", torch.tensor([0, 1, 0]))(ACTS, IMAGE).tolist() == [8.5, 26.5]


def test_direction_errors_against_the_layer() -> None:
    shapes = {"features.3": (6, 16, 8, 8), "classifier.0": (6, 64)}
    direction("features.3", torch.ones(16)).validate(shapes)
    direction("features.3", torch.ones(6, 16)).validate(shapes)
    with pytest.raises(
        InvalidArgumentError,
        match=exact(
            "direction's vector has 10 values, but layer 'features.3' has 16 channels: give one value per channel."
        ),
    ):
        direction("features.3", torch.ones(10)).validate(shapes)
    with pytest.raises(
        InvalidArgumentError, match=r"but layer 'classifier\.0' has 64 units: give one value per unit"
    ):
        direction_neuron("classifier.0", torch.ones(16)).validate(shapes)
    with pytest.raises(
        InvalidArgumentError,
        match=exact(
            "direction's vector holds 4 directions, one per image, for a batch of 6: give one row per image, "
            "or one (16,) vector for every image."
        ),
    ):
        direction("features.3", torch.ones(4, 16)).validate(shapes)
    with pytest.raises(InvalidArgumentError, match=r"position \(8, 0\) is outside the \(8, 8\) feature map"):
        direction_neuron("features.3", torch.ones(16), position=(8, 0)).validate(shapes)
    with pytest.raises(InvalidArgumentError, match="without positions; leave position=None"):
        direction_neuron("classifier.0", torch.ones(64), position=(0, 0)).validate(shapes)
    # the same checks when the objective runs on activations it was not validated against
    with pytest.raises(InvalidArgumentError, match="holds 3 directions, one per image, for a batch of 2"):
        direction("conv", torch.ones(3, 3))(ACTS, IMAGE)
    with pytest.raises(InvalidArgumentError, match="has 2 values, but layer 'conv' has 3 channels"):
        direction_neuron("conv", [1.0, 1.0])(ACTS, IMAGE)
    with pytest.raises(InvalidArgumentError, match="layer 'fc' has no positions; leave position=None"):
        direction_neuron("fc", torch.ones(4), position=(0, 0))(ACTS, IMAGE)


def test_the_maximizer_checks_a_direction_before_any_work() -> None:
    from convlens.featureviz.maximize import ActivationMaximizer

    real: list[bool] = []
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
    net.register_forward_pre_hook(lambda module, args: real.append(not args[0].is_meta))
    with pytest.raises(InvalidArgumentError, match="vector has 5 values, but layer '1' has 8 channels"):
        ActivationMaximizer(net, direction("1", torch.ones(5)), input_shape=(1, 3, 8, 8), steps=1)
    with pytest.raises(InvalidArgumentError, match="holds 3 directions, one per image, for a batch of 2"):
        ActivationMaximizer(net, direction("1", torch.ones(3, 8)), input_shape=(2, 3, 8, 8), steps=1)
    with pytest.raises(InvalidArgumentError, match=r"position \(6, 6\) is outside the \(6, 6\) feature map"):
        ActivationMaximizer(
            net, direction_neuron("1", torch.ones(8), position=(6, 6)), input_shape=(1, 3, 8, 8)
        )
    assert not any(real)  # nothing ran on real tensors (a probe on the meta device may)
    result = ActivationMaximizer(
        net, direction("1", torch.rand(2, 8), cossim_pow=1), input_shape=(2, 3, 8, 8), steps=8, lr=0.1
    ).run()
    assert result.values.shape == (2,)
    assert result.history[-1] > result.history[0]
