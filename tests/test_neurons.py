from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import convlens as cl
from convlens.errors import InvalidArgumentError, InvalidTypeError, LayerNotFoundError
from convlens.featureviz.neurons import NeuronVisualizer, TopExamplesResult
from convlens.models.zoo import DigitsCNN, digits_cnn, digits_dataset
from invariants import assert_unchanged, snapshot


class ImagesOnly(Dataset[Tensor]):
    """Items are bare tensors x, not tuples."""

    def __init__(self, images: Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Tensor:
        return self.images[i]


def brute_force(model: nn.Module, layer: str, neuron: int, images: Tensor) -> list[tuple[float, int]]:
    """Every image's activation (channel mean or unit value), sorted high to low, ties by index."""
    with cl.LayerTap(model, [layer]) as tap, torch.no_grad():
        model(images)
    act = tap[layer][:, neuron]
    values = act.flatten(1).mean(1) if act.dim() > 1 else act
    return sorted(((float(v), i) for i, v in enumerate(values)), key=lambda t: (-t[0], t[1]))


# -- maximize ---------------------------------------------------------------------------


def test_each_image_specializes_in_its_neuron(digits: DigitsCNN) -> None:
    nv = NeuronVisualizer(digits, "classifier.0")
    res = nv.maximize(units=range(4), steps=30, value_range=(0, 1))
    assert res.image.shape == (4, 1, 28, 28)
    assert res.values.shape == (4,)
    assert res.history.shape == (30,)
    with torch.no_grad():
        acts = cl.LayerTap(digits, ["classifier.0"]).run(res.image)["classifier.0"][:, :4]  # (image, neuron)
    torch.testing.assert_close(res.values, acts.diagonal())
    for j in range(4):
        others = torch.cat([acts[:j, j], acts[j + 1 :, j]])
        assert bool(acts[j, j] > others.max()), f"image {j} does not excite neuron {j} most"


def test_conv_neuron_is_the_channel_mean_and_l1_removes_ink(digits: DigitsCNN) -> None:
    nv = NeuronVisualizer(digits, digits.features[3])  # a module works as well as its name
    assert nv.layer == "features.3"
    plain = nv.maximize([1, 5], steps=25, lr=0.1, value_range=(0, 1))
    sparse = nv.maximize([1, 5], l1=30.0, steps=25, lr=0.1, value_range=(0, 1))
    with torch.no_grad():
        acts = digits.features[:4](sparse.image)
    want = acts[[0, 1], [1, 5]].mean((1, 2)) - 30.0 * sparse.image.abs().mean((1, 2, 3))
    torch.testing.assert_close(sparse.values, want)
    assert bool((sparse.image.mean((1, 2, 3)) < plain.image.mean((1, 2, 3))).all())


def test_maximize_leaves_model_and_rng_alone(digits: DigitsCNN) -> None:
    before, rng = snapshot(digits), torch.random.get_rng_state()
    nv = NeuronVisualizer(digits, "features.0")
    a = nv.maximize(3, steps=4, seed=1, transforms=True, param="fft")
    b = nv.maximize([3], steps=4, seed=1, transforms=True, param="fft")
    assert torch.equal(a.image, b.image)
    assert_unchanged(digits, before)
    assert torch.equal(torch.random.get_rng_state(), rng)


def test_maximize_errors(digits: DigitsCNN) -> None:
    nv = NeuronVisualizer(digits, "classifier.0")
    with pytest.raises(
        InvalidArgumentError, match=r"channel 64 is out of range: layer 'classifier\.0' has 64 units"
    ):
        nv.maximize([0, 64])
    with pytest.raises(InvalidArgumentError, match="units is empty"):
        nv.maximize([])
    with pytest.raises(InvalidArgumentError, match="l1 must be a finite number >= 0"):
        nv.maximize(0, l1=-1.0)
    with pytest.raises(InvalidTypeError, match="units must be"):
        nv.maximize("0")  # type: ignore[arg-type]
    with pytest.raises(LayerNotFoundError, match=r"Did you mean 'classifier\.2'"):
        NeuronVisualizer(digits, "classifier.3")


def test_input_shape_is_guessed_or_asked_for() -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    with pytest.raises(InvalidArgumentError, match="cannot guess the input size"):
        NeuronVisualizer(net, "1").maximize(0, steps=1)
    assert NeuronVisualizer(net, "1", input_shape=(1, 1, 7, 7)).maximize(0, steps=1).image.shape == (
        1,
        1,
        7,
        7,
    )
    with pytest.raises(InvalidArgumentError, match="batch of 1 first"):
        NeuronVisualizer(net, "1", input_shape=(2, 1, 7, 7))
    rgb = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU())
    assert NeuronVisualizer(rgb, "0")._input_shape() == (1, 3, 224, 224)


# -- top_examples -------------------------------------------------------------------------


def test_top_examples_match_brute_force(digits: DigitsCNN, test_set: TensorDataset) -> None:
    images = test_set.tensors[0]
    want = brute_force(digits, "features.3", 6, images)[:9]
    nv = NeuronVisualizer(digits, "features.3")
    sources: list[Dataset[object] | DataLoader[object]] = [
        test_set,  # items (x, y)
        DataLoader(test_set, batch_size=50),  # batches [x, y], the last one short
        ImagesOnly(images),  # items x
        DataLoader(ImagesOnly(images), batch_size=7),
    ]
    for data in sources:
        best = nv.top_examples(data, unit=6, k=9)
        assert isinstance(best, TopExamplesResult)
        assert best.indices.tolist() == [i for _, i in want]
        torch.testing.assert_close(best.activations, torch.tensor([v for v, _ in want]))
        assert best.inputs is not None
        assert torch.equal(best.inputs, images[best.indices])
        assert bool((best.activations[:-1] >= best.activations[1:]).all())
        assert (best.layer, best.unit) == ("features.3", 6)


def test_top_examples_linear_unit(digits: DigitsCNN, test_set: TensorDataset) -> None:
    want = brute_force(digits, "classifier.2", 4, test_set.tensors[0])[:5]
    best = NeuronVisualizer(digits, "classifier.2").top_examples(DataLoader(test_set, batch_size=64), 4, k=5)
    assert best.indices.tolist() == [i for _, i in want]
    labels = test_set.tensors[1][best.indices]
    assert labels.tolist().count(4) >= 4  # the digit-4 logit likes fours


def test_top_examples_k_larger_than_data_and_ties() -> None:
    conv = nn.Conv2d(1, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    net = nn.Sequential(conv, nn.ReLU())
    images = torch.tensor([1.0, 3.0, 2.0, 3.0, 1.0]).view(5, 1, 1, 1).expand(5, 1, 2, 2).clone()
    best = NeuronVisualizer(net, "1").top_examples(TensorDataset(images), 0, k=9)
    assert best.indices.tolist() == [1, 3, 2, 0, 4]  # clipped to the data; ties keep the lower index first
    assert best.activations.tolist() == [3.0, 3.0, 2.0, 1.0, 1.0]
    one = NeuronVisualizer(net, "1").top_examples(DataLoader(TensorDataset(images), batch_size=2), 0, k=1)
    assert one.indices.tolist() == [1]


def test_top_examples_errors_and_hygiene(digits: DigitsCNN, test_set: TensorDataset) -> None:
    nv = NeuronVisualizer(digits, "features.3")
    before = snapshot(digits)
    with pytest.raises(
        InvalidArgumentError, match=r"channel 16 is out of range: layer 'features\.3' has 16 channels"
    ):
        nv.top_examples(test_set, unit=16)
    with pytest.raises(InvalidArgumentError, match="k must be an int >= 1"):
        nv.top_examples(test_set, unit=0, k=0)
    with pytest.raises(InvalidArgumentError, match="data is empty"):
        nv.top_examples(TensorDataset(torch.zeros(0, 1, 28, 28)), unit=0)
    with pytest.raises(InvalidTypeError, match="a DataLoader or an iterable of batches; got int"):
        nv.top_examples(42, unit=0)  # type: ignore[arg-type]
    digits.train()
    try:
        nv.top_examples(test_set, unit=2, k=3)
        assert digits.training
    finally:
        digits.eval()
    assert_unchanged(digits, before)


def test_integer_like_neurons_and_the_global_rng_untouched() -> None:
    import numpy as np

    from convlens.models.zoo import digits_cnn, digits_dataset

    model = digits_cnn()
    nv = NeuronVisualizer(model, "classifier.0")
    assert nv.maximize(torch.arange(2), steps=1).image.shape[0] == 2
    assert nv.maximize(np.array([0, 1, 2]), steps=1).image.shape[0] == 3
    with pytest.raises(InvalidArgumentError, match="unit -1 is out of range"):
        nv.maximize([-1], steps=1)
    data = digits_dataset("test")
    state = torch.random.get_rng_state()
    by_int = nv.top_examples(data, unit=3, k=4)
    assert torch.equal(torch.random.get_rng_state(), state)  # no draw from the global RNG
    assert torch.equal(nv.top_examples(data, unit=np.int64(3), k=4).indices, by_int.indices)
    assert torch.equal(nv.top_examples(data, unit=torch.tensor(3), k=4).indices, by_int.indices)
    double = NeuronVisualizer(digits_cnn().double(), "classifier.0").top_examples(data, unit=3, k=4)
    assert torch.equal(double.indices, by_int.indices)  # float32 data into a float64 model
    assert double.activations.dtype == torch.float64


def test_maximize_in_picture_space() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    nv = NeuronVisualizer(net, "1", input_shape=(1, 3, 16, 16))
    res = nv.maximize([0, 3], steps=3, normalize="lecture")
    assert res.picture is not None
    assert res.picture.shape == (2, 3, 16, 16)
    assert bool((res.picture >= 0).all() and (res.picture <= 1).all())
    torch.testing.assert_close(res.image, (res.picture - 0.5) / 0.5)


def test_every_unit_in_one_pass_equals_one_unit_at_a_time() -> None:
    digits = digits_cnn()
    data = digits_dataset("test")
    nv = NeuronVisualizer(digits, "features.3")
    every = nv.top_examples(data, k=5, batch_size=50)
    assert isinstance(every.unit, list)
    assert every.inputs is not None
    units = len(every.unit)
    assert every.indices.shape == (units, 5)
    assert every.inputs.shape == (units, 5, 1, 28, 28)
    for u in (0, 3, units - 1):
        one = nv.top_examples(data, unit=u, k=5)
        assert every.indices[u].tolist() == one.indices.tolist()
        torch.testing.assert_close(every.activations[u], one.activations.float())
        assert one.inputs is not None
        assert torch.equal(every.inputs[u], one.inputs)
    # A list ranks those units, in its order; keep_inputs=False keeps no inputs.
    some = nv.top_examples(data, unit=[5, 2], k=3, keep_inputs=False)
    assert some.unit == [5, 2]
    assert some.inputs is None
    assert some.indices.tolist() == every.indices[[5, 2], :3].tolist()


def test_top_examples_of_a_linear_layer_by_brute_force() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 4))
    x = torch.randn(37, 3, 2, 2)
    best = NeuronVisualizer(net, "1").top_examples(TensorDataset(x), k=4, batch_size=8)
    with torch.no_grad():
        acts = net(x)  # (37, 4)
    want = torch.sort(acts.T, dim=1, descending=True, stable=True)
    assert best.indices.tolist() == want.indices[:, :4].tolist()
    torch.testing.assert_close(best.activations, want.values[:, :4])


def test_top_examples_takes_an_iterable_of_batches() -> None:
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU())
    x = torch.randn(20, 1, 6, 6)
    batches = [(x[i : i + 6], torch.zeros(len(x[i : i + 6]))) for i in range(0, 20, 6)]
    nv = NeuronVisualizer(net, "1")
    from_batches = nv.top_examples(iter(batches), k=3)
    from_dataset = nv.top_examples(TensorDataset(x), k=3)
    assert from_batches.indices.tolist() == from_dataset.indices.tolist()


def test_top_examples_progress_bar_is_tqdm_and_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import types

    calls: list[dict[str, object]] = []

    def fake_tqdm(iterable: object, **kwargs: object) -> object:
        calls.append(kwargs)
        return iterable

    monkeypatch.setitem(sys.modules, "tqdm", types.SimpleNamespace(tqdm=fake_tqdm))
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    data = TensorDataset(torch.randn(10, 1, 5, 5))
    nv = NeuronVisualizer(net, "1")
    with_bar = nv.top_examples(data, k=2, batch_size=4)
    assert len(calls) == 1
    assert calls[0]["total"] == 3  # batches of 4, 4, 2
    assert calls[0]["disable"] is None  # tqdm hides itself when the output is not a terminal
    without = nv.top_examples(data, k=2, batch_size=4, progress=False)
    assert len(calls) == 1
    assert with_bar.indices.tolist() == without.indices.tolist()


def test_conv_channels_report_their_peak_and_the_window_it_sees() -> None:
    """positions are each example's argmax in the layer's grid; boxes its receptive field, clipped."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(2, 4, 5, stride=2, padding=2), nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1)
    ).eval()
    images = torch.randn(20, 2, 21, 19)
    best = NeuronVisualizer(net, "2").top_examples(TensorDataset(images), k=3, batch_size=6)
    assert best.positions is not None
    assert best.boxes is not None
    assert best.positions.shape == (4, 3, 2)
    assert best.boxes.shape == (4, 3, 4)
    with torch.no_grad():
        acts = net(images)  # (20, 4, 6, 5)
    # The receptive field by hand: conv 5 (stride 2, pad 2), then pool 3 (stride 2, pad 1).
    rf, jump, start = 5 + (3 - 1) * 2, 2 * 2, -2 - 1 * 2
    for c in range(4):
        for j, index in enumerate(best.indices[c].tolist()):
            grid = acts[index, c]
            flat = int(grid.flatten().argmax())
            row, col = divmod(flat, grid.shape[1])
            assert best.positions[c, j].tolist() == [row, col]
            top, left = start + row * jump, start + col * jump
            assert best.boxes[c, j].tolist() == [
                max(top, 0),
                max(left, 0),
                min(top + rf, 21),
                min(left + rf, 19),
            ]
    crops = best.crops()
    assert len(crops) == 12
    top_, left_, bottom, right = best.boxes[0, 0].tolist()
    torch.testing.assert_close(crops[0], images[int(best.indices[0, 0])][:, top_:bottom, left_:right])
    one = NeuronVisualizer(net, "2").top_examples(TensorDataset(images), unit=2, k=3)
    assert one.positions is not None
    assert one.boxes is not None
    assert torch.equal(one.positions, best.positions[2])
    assert torch.equal(one.boxes, best.boxes[2])


def test_a_linear_layer_has_no_positions_and_no_crops() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    best = NeuronVisualizer(net, "1").top_examples(TensorDataset(torch.randn(5, 1, 4, 4)), k=2)
    assert best.positions is None
    assert best.boxes is None
    with pytest.raises(InvalidArgumentError, match="no receptive-field boxes"):
        best.crops()
    conv = nn.Sequential(nn.Conv2d(1, 2, 3))
    bare = NeuronVisualizer(conv, "0").top_examples(
        TensorDataset(torch.randn(5, 1, 6, 6)), k=2, keep_inputs=False
    )
    assert bare.boxes is not None
    with pytest.raises(InvalidArgumentError, match="keep_inputs=True"):
        bare.crops()


def test_kept_inputs_stay_bounded_by_the_winners() -> None:
    """Only the current winners' inputs are held while streaming, never every batch."""
    from convlens.featureviz.topk import RunningTop

    top = RunningTop([0, 1], 2, keep_inputs=True, spatial=())
    for start in range(0, 40, 8):
        x = torch.randn(8, 3)
        values = torch.randn(2, 8)
        top.update(values, torch.arange(start, start + 8), x, None)
        assert len(top.kept) <= 4
        assert top.positions is not None
        assert set(top.kept) == set(top.positions.flatten().tolist())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_top_examples_on_cuda_equal_the_cpu_result() -> None:
    cpu = digits_cnn()
    data = digits_dataset("test")
    expected = NeuronVisualizer(cpu, "features.3").top_examples(data, k=5)
    got = NeuronVisualizer(digits_cnn().cuda(), "features.3").top_examples(data, k=5)
    assert got.indices.device.type == "cuda"
    assert got.inputs is not None
    assert expected.inputs is not None
    torch.testing.assert_close(got.activations.cpu(), expected.activations, rtol=1e-4, atol=1e-5)
    assert torch.equal(got.indices.cpu(), expected.indices)  # no near-ties in the digits at k=5
    torch.testing.assert_close(got.inputs.cpu(), expected.inputs)
    assert got.boxes is not None
    assert expected.boxes is not None
    assert torch.equal(got.boxes.cpu(), expected.boxes)


# -- vocabulary: units; the old keywords warn for one release and give the same result ------------------


def test_old_keywords_warn_and_give_the_same_results(digits: DigitsCNN, test_set: TensorDataset) -> None:
    nv = NeuronVisualizer(digits, "classifier.0")
    new = nv.maximize(units=range(3), l1=1e-3, steps=4)
    with pytest.warns(DeprecationWarning, match=r"neurons= is deprecated, use units="):
        old = nv.maximize(neurons=range(3), l1=1e-3, steps=4)
    assert torch.equal(old.image, new.image)
    assert torch.equal(old.values, new.values)
    assert torch.equal(nv.maximize(range(3), l1=1e-3, steps=4).image, new.image)  # positional unchanged
    best = nv.top_examples(test_set, unit=3, k=9)
    with pytest.warns(DeprecationWarning, match=r"neuron= is deprecated, use unit="):
        before = nv.top_examples(test_set, neuron=3, k=9)
    assert torch.equal(before.indices, best.indices)
    assert torch.equal(before.activations, best.activations)
    assert before.inputs is not None
    assert best.inputs is not None
    assert torch.equal(before.inputs, best.inputs)
    assert torch.equal(nv.top_examples(test_set, 3, 9).indices, best.indices)  # positional unchanged
    with pytest.warns(DeprecationWarning, match=r"TopExamplesResult.neuron is deprecated, use .unit"):
        assert best.unit == best.neuron == 3  # the old attribute name still reads
    every = nv.top_examples(test_set, k=2, keep_inputs=False)
    with pytest.warns(DeprecationWarning, match=r"\.neuron is deprecated"):
        assert every.neuron == every.unit == list(range(64))
    with pytest.raises(InvalidArgumentError, match=r"neuron= is the old spelling of unit="):
        nv.top_examples(test_set, unit=2, neuron=3)
    with pytest.raises(InvalidTypeError, match="maximize needs the units"):
        nv.maximize()


def test_the_receptive_field_is_traced_once_per_model_and_input(
    monkeypatch: pytest.MonkeyPatch, test_set: TensorDataset
) -> None:
    from convlens.core.shapes import trace_shapes

    traced: list[tuple[int, ...]] = []

    def counted(model: nn.Module, input_shape: tuple[int, ...], **options: object) -> cl.ShapeReport:
        traced.append(input_shape)
        return trace_shapes(model, input_shape, **options)  # type: ignore[arg-type]

    monkeypatch.setattr("convlens.featureviz.topk.trace_shapes", counted)
    model = digits_cnn()
    data = TensorDataset(test_set.tensors[0][:20])
    first = NeuronVisualizer(model, "features.3").top_examples(data, unit=2, k=3)
    second = NeuronVisualizer(model, "features.3").top_examples(data, unit=2, k=3)  # a fresh visualizer
    assert len(traced) == 1
    assert first.boxes is not None
    assert second.boxes is not None
    assert torch.equal(first.boxes, second.boxes)
    NeuronVisualizer(model, "features.0").top_examples(data, unit=2, k=3)  # another layer: traced
    assert len(traced) == 2
    conv = model.features[3]
    assert isinstance(conv, nn.Conv2d)
    conv.padding = (2, 2)  # an edit: traced again, and the boxes follow it
    edited = NeuronVisualizer(model, "features.3").top_examples(data, unit=2, k=3)
    assert len(traced) == 3
    assert edited.positions is not None
    assert edited.boxes is None  # the classifier no longer fits: no trace, no field (not the old one)


@pytest.mark.parametrize("flag", ["keep_inputs", "progress"])
def test_flags_of_top_examples_must_be_bools(flag: str) -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1))
    data = [torch.zeros(2, 1, 3, 3)]
    with pytest.raises(InvalidTypeError, match=rf"{flag} must be True or False; got int 1"):
        NeuronVisualizer(net, "0").top_examples(data, **{flag: 1})  # type: ignore[arg-type]


class MaskedConv(nn.Module):
    """forward(x, mask): the mask is one more input channel (its batch must be x's), then two convs."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.c = nn.Conv2d(4, 4, 3)  # 3 colours and the mask
        self.d = nn.Conv2d(4, 4, 3, stride=2)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        out: Tensor = self.d(self.c(torch.cat([x, mask], 1)))
        return out


def test_boxes_are_kept_through_a_wrapper_and_with_forward_args() -> None:
    """The receptive field is traced on the wrapped model's names, with the forward arguments of one row."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2))
    data = TensorDataset(torch.randn(6, 3, 16, 16))
    plain = NeuronVisualizer(net, "2").top_examples(data, [0, 1], 2)
    assert plain.boxes is not None
    dp = nn.DataParallel(net)
    for name in ("module.2", "2"):
        wrapped = NeuronVisualizer(dp, name).top_examples(data, [0, 1], 2)
        assert wrapped.boxes is not None, name
        assert torch.equal(wrapped.boxes, plain.boxes)
    masked = MaskedConv()
    before = snapshot(masked)
    masks = torch.ones(6, 1, 16, 16)
    spellings: list[cl.ForwardArgs | tuple[Tensor]] = [(masks,), cl.ForwardArgs(mask=masks)]
    for extra in spellings:  # one mask row per example (len(data) rows): the trace takes the first
        best = NeuronVisualizer(masked, "d").top_examples(data, [0, 1], 2, batch_size=4, forward_args=extra)
        assert best.boxes is not None
        assert best.positions is not None
        rf, jump = 3 + 2 * 1, 2  # conv 3, then conv 3 with stride 2
        tops = best.positions[..., 0] * jump
        assert torch.equal(best.boxes[..., 0], tops)
        assert torch.equal(best.boxes[..., 2], (tops + rf).clamp(max=16))
    assert_unchanged(masked, before)


def test_the_remembered_field_is_keyed_by_the_forward_arguments_signature() -> None:
    from convlens.core.inputs import ForwardArgs
    from convlens.featureviz.topk import receptive_field

    class Deep(nn.Module):
        """The forward arguments choose whether ``a`` runs before ``b``: the field of ``b`` depends on them."""

        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(1, 1, 3)
            self.b = nn.Conv2d(1, 1, 3)

        def forward(self, x: Tensor, deep: bool) -> Tensor:
            out: Tensor = self.b(self.a(x) if deep else x)
            return out

    model = Deep()
    shallow = receptive_field(model, "b", (1, 1, 12, 12), ForwardArgs(False))
    deep = receptive_field(model, "b", (1, 1, 12, 12), ForwardArgs(deep=True))
    assert shallow is not None
    assert deep is not None
    assert (shallow[0], deep[0]) == ((3, 3), (5, 5))  # each traced with its own arguments
    assert receptive_field(model, "b", (1, 1, 12, 12), ForwardArgs(False)) == shallow
    assert receptive_field(model, "b", (1, 1, 12, 12)) is None  # the forward needs its argument
