"""convlens.evaluate: dataset-level scores of CAM maps, against references computed here by hand.

Run as a script under ``torchrun`` (``python -m torch.distributed.run ... tests/test_evaluate.py OUT``),
this file is also the worker of the two-rank test at the bottom.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import convlens as cl
from convlens.attribution.cam import (
    CAMContext,
    EigenCAM,
    GradCAM,
    GradCAMPlusPlus,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
)
from convlens.attribution.evaluation import EvaluationResult, EvaluationRow, evaluate
from convlens.attribution.faithfulness import deletion, insertion
from convlens.errors import (
    InvalidArgumentError,
    InvalidTypeError,
    LayerNotFoundError,
    MethodNotFoundError,
    ShapeError,
)
from helpers import tolerance, torchrun
from invariants import assert_unchanged, global_hook_counts, snapshot
from models import Bound, CallLog, Conditioned, quantize

CLASSES = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "xgradcam": XGradCAM,
    "layercam": LayerCAM,
    "scorecam": ScoreCAM,
    "eigencam": EigenCAM,
}


# -- models and data -----------------------------------------------------------------------------


def small_net(*, log_softmax: bool = False, gain: float = 1.0) -> nn.Sequential:
    """Seeded: (N, 3, 8, 8) -> (N, 5); layer "3" (a ReLU) at the input's resolution, "4" at half of it.

    ``gain`` scales every weight and bias (larger maps, more confident predictions).
    """
    torch.manual_seed(0)
    layers: list[nn.Module] = [
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    ]
    if log_softmax:
        layers.append(nn.LogSoftmax(dim=1))
    net = nn.Sequential(*layers).eval()
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.mul_(gain)
    return net


def images(n: int = 10, seed: int = 1) -> Tensor:
    return torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def labels(n: int = 10, seed: int = 2) -> Tensor:
    return torch.randint(0, 5, (n,), generator=torch.Generator().manual_seed(seed))


class Images(Dataset[Tensor]):
    """Items are bare tensors x."""

    def __init__(self, x: Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> Tensor:
        return self.x[i]


def numbers(result: EvaluationResult) -> list[tuple[float, ...]]:
    return [row.values() for row in result.rows]


#: The size of each column's values: AUCs of probabilities, then two percentages of probabilities.
SCALES = torch.tensor([1.0, 1.0, 100.0, 100.0], dtype=torch.float64)


def assert_numbers(result: EvaluationResult, expected: Sequence[Sequence[float]]) -> None:
    """Equal up to float32 rounding, each column measured in probability units (percent / 100)."""
    torch.testing.assert_close(
        torch.tensor(numbers(result), dtype=torch.float64) / SCALES,
        torch.tensor(expected, dtype=torch.float64) / SCALES,
        **tolerance(),
    )


def brute_force(
    model: nn.Module,
    method: str,
    x: Tensor,
    layer: str,
    *,
    y: Tensor | None = None,
    intervals: int = 6,
    baseline: Any = "zeros",
) -> tuple[float, float, float, float]:
    """The four numbers over the whole dataset as one tensor, in plain torch (faithfulness for the curves)."""
    with torch.no_grad():
        logits = model(x)
    target = logits.argmax(1) if y is None else y
    maps = CLASSES[method](model, layer)(x, target).maps
    with torch.no_grad():
        masked = model(x * maps[:, None])
    p, q = logits.softmax(1), masked.softmax(1)
    big_y = p[torch.arange(len(x)), target]
    big_o = q[torch.arange(len(x)), target]
    drop = (torch.clamp(big_y - big_o, min=0) / (big_y + 1e-7)).double().mean() * 100
    increase = (big_o > big_y).double().mean() * 100
    removed = deletion(model, x, maps, target, intervals=intervals, baseline=baseline).auc.double().mean()
    revealed = insertion(model, x, maps, target, intervals=intervals, baseline=baseline).auc.double().mean()
    return float(removed), float(revealed), float(drop), float(increase)


# -- (1) the numbers, against a brute-force pass and against hand-computed values ------------------------


@pytest.mark.parametrize("method", sorted(CLASSES))
def test_each_method_equals_a_brute_force_pass_over_the_whole_dataset(method: str) -> None:
    model, x = small_net(), images()
    res = evaluate(model, method, TensorDataset(x), layer="3", intervals=6, batch_size=4, progress=False)
    assert res.count == 10
    assert res.methods == (method,)
    assert_numbers(res, [brute_force(model, method, x, "3")])


@pytest.mark.parametrize("baseline", ["blur", "mean", "tensor"])
def test_the_baseline_reaches_deletion_and_insertion(baseline: str) -> None:
    model, x = small_net(), images()
    base: Any = torch.full((1, 3, 1, 1), 0.5) if baseline == "tensor" else baseline
    res = evaluate(
        model, ["gradcam"], list(torch.split(x, 3)), layer="4", intervals=5, baseline=base, progress=False
    )
    assert_numbers(res, [brute_force(model, "gradcam", x, "4", intervals=5, baseline=base)])
    zeros = evaluate(model, ["gradcam"], list(torch.split(x, 3)), layer="4", intervals=5, progress=False)
    assert res["gradcam"].deletion != zeros["gradcam"].deletion
    assert res.baseline == ("tensor [1, 3, 1, 1]" if baseline == "tensor" else baseline)


class FixedCAM(GradCAM):
    """A CAM whose map is given: the right half of a 4x4 picture."""

    needs_gradient = False

    def raw_map(self, activation: Tensor, gradient: Tensor | None, context: CAMContext) -> Tensor:
        right = torch.zeros(4, 4, dtype=activation.dtype, device=activation.device)
        right[:, 2:] = 1.0
        return right.expand(len(activation), 4, 4)


def half_net() -> nn.Sequential:
    """(N, 1, 4, 4) -> logit 0 = sum of the left half, logit 1 = 2."""
    linear = nn.Linear(16, 2)
    with torch.no_grad():
        linear.weight.zero_()
        linear.weight[0] = torch.tensor([1.0, 1.0, 0.0, 0.0]).repeat(4)
        linear.bias.copy_(torch.tensor([0.0, 2.0]))
    return nn.Sequential(nn.Identity(), nn.Flatten(), linear)


def test_average_drop_and_increase_in_confidence_by_hand() -> None:
    model = half_net()
    x = torch.ones(2, 1, 4, 4)
    # Masked by the right half, the left half goes dark: logit 0 falls from 8 to 0; logit 1 stays 2.
    y0, o0 = 1 / (1 + math.exp(-6)), 1 / (1 + math.exp(2))  # class 0 on x and on the masked x
    y1, o1 = 1 / (1 + math.exp(6)), 1 / (1 + math.exp(-2))  # class 1: it gains
    cam = FixedCAM(model, "0")
    res = evaluate(model, [cam], [(x, torch.tensor([0, 1]))], target="label", intervals=4, progress=False)
    row = res["FixedCAM"]
    assert row.average_drop == pytest.approx(100 * ((y0 - o0) / (y0 + 1e-7) + 0.0) / 2, rel=1e-6)
    assert row.increase_in_confidence == 50.0
    predicted = evaluate(model, [cam], [x], intervals=4, progress=False)  # both predict class 0
    assert predicted["FixedCAM"].average_drop == pytest.approx(100 * (y0 - o0) / (y0 + 1e-7), rel=1e-6)
    assert predicted["FixedCAM"].increase_in_confidence == 0.0
    assert o1 > y1


def test_an_unchanged_score_is_no_increase() -> None:
    """O == Y exactly (the map keeps every pixel the class reads) counts neither as drop nor increase."""

    class LeftCAM(FixedCAM):
        def raw_map(self, activation: Tensor, gradient: Tensor | None, context: CAMContext) -> Tensor:
            return 1.0 - super().raw_map(activation, gradient, context)

    model = half_net()
    res = evaluate(model, [LeftCAM(model, "0")], [torch.ones(3, 1, 4, 4)], intervals=4, progress=False)
    assert res["LeftCAM"].average_drop == 0.0
    assert res["LeftCAM"].increase_in_confidence == 0.0


# -- (2) torchcam's ClassificationMetric and DeletionInsertionMetric --------------------------------------


@pytest.mark.parametrize(
    ("ours", "theirs"), [("gradcam", "GradCAM"), ("layercam", "LayerCAM"), ("xgradcam", "XGradCAM")]
)
def test_equals_torchcam_where_the_maps_are_the_same(ours: str, theirs: str) -> None:
    """A model ending in log-softmax, a layer at the input's resolution: torchcam's maps are ours.

    torchcam's metrics hand the extractor softmax(output), so its CAM explains the probability
    p = softmax(log_softmax(z)); ours explains the output log p. The gradient of p is p times that
    of log p, a positive factor per sample that min-max scaling removes (for these three methods);
    at the input's resolution, scaling before or after upsampling is the same.
    """
    methods = pytest.importorskip("torchcam.methods")
    metrics = pytest.importorskip("torchcam.metrics")
    # gain 3: spans of the maps far above the 1e-8 torchcam adds to their denominator
    model, x = small_net(log_softmax=True, gain=3.0), images(12)
    res = evaluate(model, [ours], TensorDataset(x), layer="3", intervals=8, batch_size=5, progress=False)

    extractor = getattr(methods, theirs)(model, target_layer="3")
    try:
        probabilities = partial(torch.softmax, dim=-1)
        scores = probabilities(model(x))
        theirs_maps = extractor(scores.argmax(1).tolist(), scores)[0]
        torch.testing.assert_close(theirs_maps, CLASSES[ours](model, "3")(x).maps, atol=1e-5, rtol=0)
        classification = metrics.ClassificationMetric(extractor, probabilities)
        # 8 x 8 pixels in 8 intervals: torchcam's grid (a ceil'd step) is ours (floor(k * 64 / 8)).
        curves = metrics.DeletionInsertionMetric(extractor, probabilities, steps=8, batch_size=7)
        for batch in torch.split(x, 5):
            classification.update(batch)
            curves.update(batch)
    finally:
        extractor.remove_hooks()
    got, want = classification.summary(), curves.summary()
    row = res[ours]
    assert row.average_drop == pytest.approx(100 * got["avg_drop"], abs=1e-4)
    assert row.increase_in_confidence == pytest.approx(100 * got["conf_increase"], abs=1e-9)
    assert row.deletion == pytest.approx(want["deletion_auc"], abs=1e-5)
    assert row.insertion == pytest.approx(want["insertion_auc"], abs=1e-5)
    assert 0 < row.increase_in_confidence < 100  # both outcomes occur: the comparison can fail


# -- (3) streaming: the data's form and the batch size do not matter ---------------------------------------


@pytest.mark.slow
def test_batch_size_does_not_change_the_result() -> None:
    model, x, y = small_net(), images(), labels()
    data = TensorDataset(x, y)
    results = [
        evaluate(model, ["gradcam", "scorecam"], data, layer="4", intervals=4, batch_size=b, progress=False)
        for b in (1, 3, 10, 64)
    ]
    for res in results[1:]:
        assert res.count == 10
        assert_numbers(res, numbers(results[0]))


def test_a_dataset_a_loader_and_a_list_of_batches_agree() -> None:
    model, x, y = small_net(), images(), labels()
    run = partial(evaluate, model, ["gradcam++", "layercam"], layer="3", intervals=4, progress=False)
    base = run(TensorDataset(x, y), batch_size=4)
    others = [
        run(DataLoader(TensorDataset(x, y), batch_size=3)),
        run([(x[:7], y[:7]), (x[7:], y[7:])]),
        run(list(torch.split(x, 2))),  # bare tensors
        run(Images(x), batch_size=6),  # items are bare tensors
        run(iter([x[:5], x[5:]])),  # a one-shot iterator
    ]
    for res in others:
        assert res.count == 10
        assert_numbers(res, numbers(base))


def test_only_sums_and_a_count_outlive_a_batch() -> None:
    """Maps of one batch are gone before the next batch is read."""
    model = small_net()
    alive: list[int] = []

    def batches() -> Iterator[Tensor]:
        for chunk in torch.split(images(9), 3):
            alive.append(sum(1 for obj in _tensors() if obj.shape[-2:] == (8, 8) and obj.dim() == 3))
            yield chunk

    evaluate(model, ["gradcam"], batches(), layer="3", intervals=3, progress=False)
    assert alive[1:] == [alive[0]] * 2  # no (N, 8, 8) maps pile up


def _tensors() -> list[Tensor]:
    import gc

    gc.collect()
    return [obj for obj in gc.get_objects() if issubclass(type(obj), Tensor)]


# -- (4) target="label" ------------------------------------------------------------------------------------


def test_label_explains_the_labels() -> None:
    model, x = small_net(), images()
    with torch.no_grad():
        predicted = model(x).argmax(1)
    y = (predicted + 1) % 5  # never the prediction
    data = TensorDataset(x, y)
    res = evaluate(
        model, ["gradcam", "layercam"], data, layer="3", target="label", intervals=5, progress=False
    )
    assert res.target == "label"
    expected = [brute_force(model, m, x, "3", y=y, intervals=5) for m in ("gradcam", "layercam")]
    assert_numbers(res, expected)
    by_prediction = evaluate(model, ["gradcam", "layercam"], data, layer="3", intervals=5, progress=False)
    assert by_prediction.target is None
    assert not torch.allclose(torch.tensor(numbers(by_prediction)), torch.tensor(numbers(res)), atol=1e-3)
    as_lists = [(x[:4], y[:4].tolist()), (x[4:], y[4:].tolist())]  # labels as a list of ints
    assert_numbers(
        evaluate(
            model, ["gradcam", "layercam"], as_lists, layer="3", target="label", intervals=5, progress=False
        ),
        expected,
    )


# -- (5) bad input: a clear error before any forward -------------------------------------------------------


@pytest.fixture
def forwards() -> Iterator[tuple[nn.Module, list[str]]]:
    """A model and the device type of every forward it runs (meta probes included), via a hook of our own."""
    model = small_net()
    calls: list[str] = []
    handle = model.register_forward_pre_hook(lambda _m, args: calls.append(args[0].device.type))
    yield model, calls
    handle.remove()


def test_an_unknown_method_names_the_nearest_before_any_forward(
    forwards: tuple[nn.Module, list[str]],
) -> None:
    model, calls = forwards
    with pytest.raises(
        MethodNotFoundError, match=r"unknown method 'gradcam\+\+\+'.*Did you mean 'gradcam\+\+'"
    ):
        evaluate(model, ["gradcam", "gradcam+++"], TensorDataset(images()), layer="3")
    with pytest.raises(InvalidArgumentError, match=r"'layercam'.*or a CAM object\. Did you mean 'layercam'"):
        evaluate(model, "LayerCAM", TensorDataset(images()), layer="3")
    assert calls == []


def test_an_unknown_layer_raises_before_any_forward(forwards: tuple[nn.Module, list[str]]) -> None:
    model, calls = forwards
    with pytest.raises(LayerNotFoundError, match=r"no layer '9'\. Did you mean '7'"):
        evaluate(model, ["gradcam"], TensorDataset(images()), layer="9")
    with pytest.raises(
        LayerNotFoundError, match="no layer 'nope'"
    ):  # checked even when only objects need none
        evaluate(model, [GradCAM(model, "3")], TensorDataset(images()), layer="nope")
    assert calls == []


def test_a_name_without_a_layer_raises_before_any_forward(forwards: tuple[nn.Module, list[str]]) -> None:
    model, calls = forwards
    with pytest.raises(
        InvalidArgumentError, match=r"layer= is needed for the methods given by name \('scorecam'\)"
    ):
        evaluate(model, [GradCAM(model, "3"), "scorecam"], TensorDataset(images()))
    assert calls == []


def test_empty_data_raises_before_any_forward(forwards: tuple[nn.Module, list[str]]) -> None:
    model, calls = forwards
    empties: list[Any] = [
        [],
        TensorDataset(torch.empty(0, 3, 8, 8)),
        DataLoader(TensorDataset(torch.empty(0, 3, 8, 8))),
    ]
    for empty in empties:
        with pytest.raises(InvalidArgumentError, match="data is empty"):
            evaluate(model, ["gradcam"], empty, layer="3", progress=False)
    assert calls == []


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"methods": []}, InvalidArgumentError, "methods is empty"),
        ({"methods": 3}, InvalidTypeError, "methods must be a method name"),
        ({"methods": ["gradcam", 3]}, InvalidTypeError, "methods must hold method names"),
        ({"methods": ["gradcam", "gradcam"]}, InvalidArgumentError, "'gradcam' is given 2 times"),
        (
            {"target": "labels"},
            InvalidArgumentError,
            "target must be one of 'label'; got 'labels'. Did you mean 'label'",
        ),
        ({"intervals": 0}, InvalidArgumentError, "intervals must be an int >= 1; got 0"),
        ({"steps": 2, "intervals": 3}, InvalidArgumentError, "steps= is the old spelling of intervals="),
        ({"batch_size": 0}, InvalidArgumentError, "batch_size must be an int >= 1"),
        ({"num_workers": -1}, InvalidArgumentError, "num_workers must be an int >= 0"),
        ({"baseline": "blurr"}, InvalidArgumentError, "Did you mean 'blur'"),
        ({"baseline": torch.zeros(2, 3, 3)}, InvalidArgumentError, "must broadcast to x's shape"),
        ({"progress": "yes"}, InvalidTypeError, "progress must be True or False"),
        ({"data": 3}, InvalidTypeError, "data must be a torch Dataset"),
        ({"data": [images(2).long()]}, InvalidTypeError, "x must be a float tensor"),
        ({"data": [torch.randn(2, 3)]}, ShapeError, r"batches of 1-D signals \(N, C, L\), 2-D images"),
        ({"data": [torch.randn(1, 3, 2, 2, 8, 8)]}, ShapeError, r"\(N, C, T, H, W\); a batch has x of shape"),
        ({"data": [torch.randn(2, 3, 8)]}, ShapeError, r"0 expects 3 input channels"),  # the model's own
        ({"data": [images(2)], "target": "label"}, InvalidArgumentError, "target='label' needs batches"),
        (
            {"data": [(images(2), torch.tensor([0, 5]))], "target": "label"},
            InvalidArgumentError,
            "target 5 is out of range",
        ),
        (
            {"data": [(images(2), torch.tensor([0.0, 1.0]))], "target": "label"},
            InvalidTypeError,
            "class indices",
        ),
        (
            {"data": [(images(2), torch.tensor([0]))], "target": "label"},
            InvalidArgumentError,
            "1 entries for a batch of 2",
        ),
        ({"data": [torch.randn(2, 4, 8, 8)]}, ShapeError, "expects 3 input channels, got 4"),
    ],
)
def test_bad_arguments_raise_before_any_real_forward(
    forwards: tuple[nn.Module, list[str]], kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    model, calls = forwards
    arguments: dict[str, Any] = {
        "methods": ["gradcam"],
        "data": TensorDataset(images(4)),
        "layer": "3",
        "progress": False,
    }
    arguments.update(kwargs)
    with pytest.raises(error, match=match):
        evaluate(model, arguments.pop("methods"), arguments.pop("data"), **arguments)
    assert "cpu" not in calls  # at most the meta probe that finds out why an input is rejected


def test_a_cam_object_built_on_another_model_is_refused(forwards: tuple[nn.Module, list[str]]) -> None:
    model, calls = forwards
    with pytest.raises(InvalidArgumentError, match="built on another model"):
        evaluate(model, [GradCAM(small_net(), "3")], TensorDataset(images()))
    assert calls == []


# -- (6) the model is left as found -----------------------------------------------------------------------


class Tripwire(nn.Module):
    """BatchNorm and Dropout (so modes matter); raises on real forward number ``fail_at`` (0: never)."""

    def __init__(self, fail_at: int = 0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4, 5)
        self.fail_at = fail_at
        self.real: list[int] = []  # a list, not an int: the probe's cache key ignores it

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type != "meta":
            self.real.append(len(x))
            if len(self.real) == self.fail_at:
                raise RuntimeError("tripwire")
        h = self.relu(self.bn(self.conv(x)))
        out: Tensor = self.fc(self.drop(F.adaptive_avg_pool2d(h, 1).flatten(1)))
        return out


def prepared(model: Tripwire) -> Tripwire:
    model.train()
    model.bn.eval()  # mixed modes must come back mixed
    model.conv.weight.requires_grad_(False)
    model.fc.weight.grad = torch.ones_like(model.fc.weight)
    return model


def test_the_model_is_left_as_found_after_success() -> None:
    model = prepared(Tripwire())
    before, global_hooks = snapshot(model), global_hook_counts()
    res = evaluate(
        model, list(CLASSES), [images(4), images(3, seed=5)], layer="relu", intervals=2, progress=False
    )
    assert res.count == 7
    assert_unchanged(model, before)
    assert global_hook_counts() == global_hooks
    # Every forward ran in eval mode: Dropout was off, so a second pass gives the same numbers.
    again = evaluate(
        model, list(CLASSES), [images(4), images(3, seed=5)], layer="relu", intervals=2, progress=False
    )
    assert numbers(again) == numbers(res)


@pytest.mark.parametrize("fail_at", [1, 2, 3, 4, 5, 9])  # clean, CAM, masked, deletion, insertion, 2nd method
def test_the_model_is_left_as_found_when_a_forward_raises_midway(fail_at: int) -> None:
    model = prepared(Tripwire(fail_at))
    before, global_hooks = snapshot(model), global_hook_counts()
    with pytest.raises(RuntimeError, match="tripwire"):
        evaluate(
            model, ["gradcam", "layercam"], [images(4), images(4)], layer="relu", intervals=2, progress=False
        )
    assert len(model.real) == fail_at
    assert_unchanged(model, before)
    assert global_hook_counts() == global_hooks


def test_a_failing_forward_says_which_examples() -> None:
    model = Tripwire(
        fail_at=6
    )  # batch 2's clean forward: 1 clean + CAM + masked + deletion + insertion before it
    with pytest.raises(RuntimeError, match="tripwire") as info:
        evaluate(model, ["gradcam"], [images(4), images(4)], layer="relu", intervals=2, progress=False)
    assert "convlens.evaluate: raised on examples 4 to 7" in "\n".join(info.value.__notes__)


# -- names, tables -----------------------------------------------------------------------------------------


def test_cam_objects_are_named_by_class_and_told_apart_by_layer() -> None:
    model, x = small_net(), images(4)
    res = evaluate(
        model,
        [GradCAM(model, "3"), GradCAM(model, model[4]), "layercam", ScoreCAM(model, "3", chunk_size=2)],
        [x],
        layer="3",
        intervals=2,
        progress=False,
    )
    assert res.methods == ("GradCAM(3)", "GradCAM(4)", "layercam", "ScoreCAM")
    assert res.layer == "3, 4"
    assert res["GradCAM(3)"] != res["GradCAM(4)"]
    assert_numbers(
        evaluate(model, ["gradcam"], [x], layer=model[3], intervals=2, progress=False),
        [res["GradCAM(3)"].values()],
    )


def test_getitem_names_the_nearest_method() -> None:
    res = evaluate(small_net(), ["gradcam", "gradcam++"], [images(3)], layer="3", intervals=2, progress=False)
    assert res["gradcam++"].method == "gradcam++"
    with pytest.raises(
        MethodNotFoundError,
        match=r"no method 'gradcampp' in this result; it has 'gradcam', 'gradcam\+\+'\. Did you mean .*'gradcam\+\+'\?",
    ) as info:
        res["gradcampp"]
    assert isinstance(info.value, KeyError)
    assert isinstance(info.value, ValueError)


def test_str_and_markdown_hold_every_method_and_its_numbers() -> None:
    rows = (
        EvaluationRow(
            method="gradcam",
            deletion=0.12345,
            insertion=0.6789,
            average_drop=12.3456,
            increase_in_confidence=40.0,
        ),
        EvaluationRow(
            method="ScoreCAM", deletion=0.5, insertion=0.25, average_drop=3.14159, increase_in_confidence=0.0
        ),
    )
    res = EvaluationResult(rows=rows, count=10, layer="layer4", intervals=50, baseline="blur", target="label")
    text, markdown = str(res), res.to_markdown()
    assert text.splitlines()[0] == "10 examples, layer 'layer4', target label, 50 intervals, baseline blur"
    header, first, second = text.splitlines()[1:]
    assert first.split() == ["gradcam", "0.1235", "0.6789", "12.35", "40.00"]
    assert second.split() == ["ScoreCAM", "0.5000", "0.2500", "3.14", "0.00"]
    assert len({len(header), len(first), len(second)}) == 1  # aligned: numbers end under their headers
    lines = markdown.splitlines()
    assert lines[2] == (
        "| method | deletion AUC (lower is better) | insertion AUC (higher is better) | "
        "average drop % (lower is better) | increase in confidence % (higher is better) |"
    )
    assert lines[3] == "|---|---:|---:|---:|---:|"
    assert lines[4:] == [
        "| gradcam | 0.1235 | 0.6789 | 12.35 | 40.00 |",
        "| ScoreCAM | 0.5000 | 0.2500 | 3.14 | 0.00 |",
    ]


def test_a_real_result_prints_its_own_numbers() -> None:
    res = evaluate(small_net(), ["gradcam", "eigencam"], [images(5)], layer="3", intervals=3, progress=True)
    for row in res.rows:
        line = next(line for line in str(res).splitlines() if line.startswith(row.method))
        assert f"{row.average_drop:.2f}" in line
        assert f"{row.deletion:.4f}" in line
        assert f"| {row.method} | {row.deletion:.4f} | {row.insertion:.4f} |" in res.to_markdown()


# -- under torchrun: two ranks, each its shard, every rank the one-process result ---------------------------

#: (dataset size, target); 1 example leaves rank 1 nothing but DistributedSampler's padding.
DISTRIBUTED = {"odd": (7, None), "labels": (6, "label"), "one": (1, None), "old": (3, "predicted")}


def distributed_case(size: int, target: str | None) -> dict[str, Any]:
    x, y = images(size, seed=size), labels(size, seed=size)
    res = evaluate(
        small_net(), ["gradcam", "layercam"], TensorDataset(x, y), layer="3", target=target,  # type: ignore[arg-type]
        intervals=3, batch_size=2, progress=False,
    )  # fmt: skip
    return {"count": res.count, "numbers": numbers(res)}


def _worker(out: Path) -> None:
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    saved = {name: distributed_case(*case) for name, case in DISTRIBUTED.items()}
    torch.save(saved, out / f"rank{dist.get_rank()}.pt")
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed with gloo is needed"
)
def test_every_rank_returns_the_one_process_result(tmp_path: Path) -> None:
    torchrun(__file__, str(tmp_path))
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    for name, case in DISTRIBUTED.items():
        expected = distributed_case(*case)
        for saved in ranks:
            assert saved[name]["count"] == expected["count"] == case[0]  # the padding is not counted
            # Each rank's batches differ from one process's: float32 sums round differently. Two of
            # the four columns are percentages of differences of probabilities (scale 100).
            torch.testing.assert_close(
                torch.tensor(saved[name]["numbers"]) / SCALES,
                torch.tensor(expected["numbers"]) / SCALES,
                **tolerance(),
            )


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_evaluate_on_cuda_equals_the_cpu_result() -> None:
    import convlens as cl

    data = cl.zoo.digits_dataset("test")
    kwargs: dict[str, Any] = {"layer": "features.3", "intervals": 8, "progress": False}
    expected = cl.evaluate(cl.zoo.digits_cnn(), ["gradcam", "layercam"], data, **kwargs)
    got = cl.evaluate(cl.zoo.digits_cnn().cuda(), ["gradcam", "layercam"], data, **kwargs)
    assert got.count == expected.count == 360
    for ours, reference in zip(got.rows, expected.rows, strict=True):
        assert ours.deletion == pytest.approx(reference.deletion, abs=1e-4)
        assert ours.insertion == pytest.approx(reference.insertion, abs=1e-4)
        assert ours.average_drop == pytest.approx(reference.average_drop, abs=0.01)
        # a count of O > Y: a float near-tie may flip one digit in 360 (0.28 points)
        assert ours.increase_in_confidence == pytest.approx(reference.increase_in_confidence, abs=0.3)


# -- (6) one vocabulary: intervals=, target=None, one batch_size default, reshape= ------------------------


def test_the_old_steps_keyword_warns_and_gives_the_same_result() -> None:
    model, x = small_net(), images(6)
    new = evaluate(model, ["gradcam"], TensorDataset(x), layer="3", intervals=5, progress=False)
    with pytest.warns(DeprecationWarning, match=r"steps= is deprecated, use intervals=") as caught:
        old = evaluate(model, ["gradcam"], TensorDataset(x), layer="3", steps=5, progress=False)
    assert caught[0].filename == __file__  # the warning points at the caller's line
    assert numbers(old) == numbers(new)
    assert old.intervals == new.intervals == 5
    with pytest.warns(DeprecationWarning, match=r"EvaluationResult\.steps is deprecated, use \.intervals"):
        assert old.steps == 5  # the result's old attribute name reads the same number


def test_target_predicted_is_the_old_spelling_of_none() -> None:
    model, x = small_net(), images(6)
    new = evaluate(model, ["gradcam"], [x], layer="3", target=None, intervals=4, progress=False)
    with pytest.warns(DeprecationWarning, match=r"target='predicted' is deprecated, use target=None"):
        old = evaluate(model, ["gradcam"], [x], layer="3", target="predicted", intervals=4, progress=False)
    assert numbers(old) == numbers(new)
    assert old.target is None
    assert new.target is None
    assert "target predicted" in str(new).splitlines()[0]


def test_target_none_is_the_default_and_explains_the_prediction() -> None:
    model, x = small_net(), images(8)
    res = evaluate(model, ["gradcam", "layercam"], TensorDataset(x), layer="3", intervals=5, progress=False)
    assert res.target is None
    assert_numbers(res, [brute_force(model, m, x, "3", intervals=5) for m in ("gradcam", "layercam")])


@pytest.mark.slow
def test_target_a_class_for_every_example_and_one_per_example() -> None:
    model, x = small_net(), images(7)
    run = partial(evaluate, model, ["gradcam"], layer="3", intervals=4, batch_size=3, progress=False)
    one = run(TensorDataset(x), target=2)
    assert one.target == 2
    assert str(one).splitlines()[0].startswith("7 examples, layer '3', target class 2, 4 intervals")
    assert_numbers(one, [brute_force(model, "gradcam", x, "3", y=torch.full((7,), 2), intervals=4)])
    y = labels(7)
    for given in (y, y.tolist(), y.numpy()):
        each = run(TensorDataset(x), target=given)
        assert each.target == "per-example"
        assert_numbers(each, [brute_force(model, "gradcam", x, "3", y=y, intervals=4)])
    # The same as the labels, read from the data.
    assert numbers(run(TensorDataset(x, y), target="label")) == numbers(run(TensorDataset(x), target=y))


@pytest.mark.parametrize(
    ("target", "error", "match"),
    [
        ([0, 1, 2], InvalidArgumentError, "target has 3 entries for data of 4 examples"),
        (lambda out: out[:, 0], InvalidTypeError, "got a callable"),
        (5, InvalidArgumentError, "target 5 is out of range"),
        (-1, InvalidArgumentError, "target -1 is out of range"),
        (True, InvalidTypeError, "target must be None"),
        (torch.tensor([0.0, 1.0, 0.0, 1.0]), InvalidTypeError, "class indices"),
    ],
)
def test_bad_targets_raise_before_any_real_forward(
    forwards: tuple[nn.Module, list[str]], target: Any, error: type[Exception], match: str
) -> None:
    model, calls = forwards
    with pytest.raises(error, match=match):
        evaluate(model, ["gradcam"], TensorDataset(images(4)), layer="3", target=target, progress=False)
    assert "cpu" not in calls


def test_per_example_targets_that_miss_an_example_of_an_iterable_say_so() -> None:
    with pytest.raises(InvalidArgumentError, match="data has an example at position 3"):
        evaluate(
            small_net(), ["gradcam"], [images(2), images(2)], layer="3", target=[0, 1, 2], progress=False
        )


def test_batch_size_defaults_to_64() -> None:
    import inspect

    assert inspect.signature(evaluate).parameters["batch_size"].default == 64
    assert inspect.signature(deletion).parameters["batch_size"].default == 64


class ChannelsLast(nn.Module):
    """A patch embedding, then a Linear over the channels-last grid (N, H, W, C); every call logged."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 8, 2, stride=2)
        self.block = nn.Linear(8, 8)
        self.head = nn.Linear(8, 5)
        self.real = CallLog()

    def forward(self, x: Tensor) -> Tensor:
        self.real.entries.append((x.device.type,))
        out: Tensor = self.head(self.block(self.embed(x).permute(0, 2, 3, 1)).mean(dim=(1, 2)))
        return out


def test_reshape_reaches_the_methods_given_by_name() -> None:
    torch.manual_seed(0)
    model, x = ChannelsLast().eval(), images(4)
    permute = partial(Tensor.permute, dims=(0, 3, 1, 2))
    with pytest.raises(InvalidArgumentError, match="channels last"):
        evaluate(model, ["gradcam"], [x], layer="block", intervals=3, progress=False)
    res = evaluate(
        model, ["gradcam", "layercam"], [x], layer="block", reshape=permute, intervals=3, progress=False
    )
    objects = [GradCAM(model, "block", reshape=permute), LayerCAM(model, "block", reshape=permute)]
    assert numbers(res) == numbers(evaluate(model, objects, [x], intervals=3, progress=False))


def test_each_batch_runs_the_core_twice_per_method_and_the_public_curves_never(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from convlens.attribution import evaluation, faithfulness
    from convlens.attribution.perturbation import perturbation_curve as core

    calls: list[str] = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs["mode"])
        return core(*args, **kwargs)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("evaluate must not call the public deletion/insertion")

    monkeypatch.setattr(evaluation, "perturbation_curve", counted)
    monkeypatch.setattr(faithfulness, "_curve", refuse)
    evaluate(
        small_net(), ["gradcam", "layercam"], [images(3), images(2)], layer="3", intervals=2, progress=False
    )
    assert calls == ["deletion", "insertion"] * 4  # 2 batches x 2 methods


def test_method_names_are_the_literal_type_and_the_table_alike() -> None:
    from convlens.attribution.evaluation import METHODS, MethodName
    from convlens.core.checks import choices

    assert choices(MethodName) == tuple(METHODS)


# -- any model: forward arguments, reshape presets, model checks, quantized and half-precision models -----


def masks(n: int = 5, seed: int = 7) -> Tensor:
    return (torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed)) > 0.3).float()


@pytest.mark.parametrize("as_loader", [False, True], ids=["Dataset", "DataLoader"])
def test_forward_args_of_the_datas_length_follow_the_examples(as_loader: bool) -> None:
    model, x, mask = Conditioned(small_net()), images(5), masks()
    data: Any = DataLoader(TensorDataset(x), batch_size=2) if as_loader else TensorDataset(x)
    kwargs: dict[str, Any] = {"layer": "net.3", "intervals": 4, "baseline": "blur", "progress": False}
    res = evaluate(model, ["gradcam", "scorecam"], data, batch_size=2, forward_args=(mask, 0.5), **kwargs)
    assert model.log.devices() == {"cpu", "meta"}  # the probe got them too
    # Each example alone, its mask bound into the model: the mean of those is the dataset's number.
    alone = [
        numbers(
            evaluate(
                Bound(model, mask[i : i + 1], 0.5),
                ["gradcam", "scorecam"],
                [x[i : i + 1]],
                **{**kwargs, "layer": "model.net.3"},
            )
        )
        for i in range(len(x))
    ]
    expected = torch.tensor(alone, dtype=torch.float64).mean(0).tolist()
    assert res.count == 5
    assert_numbers(res, expected)


def test_forward_args_of_another_length_pass_as_they_are() -> None:
    model, x = Conditioned(small_net()), images(4)
    shared = masks(1)  # one mask for every example: passed as it is
    kwargs: dict[str, Any] = {"layer": "net.3", "intervals": 3, "progress": False}
    res = evaluate(model, "gradcam", [x[:3], x[3:]], forward_args={"mask": shared}, **kwargs)
    reference = evaluate(
        Bound(model, shared, 1.0), "gradcam", [x[:3], x[3:]], **{**kwargs, "layer": "model.net.3"}
    )
    assert_numbers(res, numbers(reference))


def test_forward_args_of_the_wrong_type_are_refused_before_any_forward(
    forwards: tuple[nn.Module, list[str]],
) -> None:
    model, calls = forwards
    with pytest.raises(InvalidTypeError, match=r"forward_args must be a tuple.*got list"):
        evaluate(model, "gradcam", TensorDataset(images(2)), layer="3", forward_args=[1])  # type: ignore[arg-type]
    assert calls == []


def test_reshape_presets_reach_the_methods_and_a_bad_one_is_refused_before_any_forward() -> None:
    torch.manual_seed(0)
    model, x = ChannelsLast().eval(), images(4)
    with pytest.raises(InvalidArgumentError, match="Did you mean 'channels_last'"):
        evaluate(model, ["gradcam"], [x], layer="block", reshape="channel_last", progress=False)  # type: ignore[arg-type]
    assert model.real.entries == []
    preset = evaluate(
        model, ["gradcam"], [x], layer="block", reshape="channels_last", intervals=3, progress=False
    )
    permute = partial(Tensor.permute, dims=(0, 3, 1, 2))
    by_hand = evaluate(model, ["gradcam"], [x], layer="block", reshape=permute, intervals=3, progress=False)
    assert numbers(preset) == numbers(by_hand)
    layout = evaluate(
        model, ["gradcam"], [x], layer="block", reshape=cl.Layout(part=0, reshape="channels_last"), intervals=3,
        progress=False,
    )  # fmt: skip
    assert numbers(layout) == numbers(by_hand)


def quantized_net() -> nn.Module:
    """small_net quantized in eager mode, calibrated on random images."""
    from torch.ao import quantization as tq

    class Float(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.quant, self.dequant = tq.QuantStub(), tq.DeQuantStub()
            self.body = small_net()

        def forward(self, x: Tensor) -> Tensor:
            out: Tensor = self.dequant(self.body(self.quant(x)))
            return out

    return quantize(Float(), images(16, seed=11))


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")
def test_a_quantized_model_is_refused_for_gradient_methods_and_scored_by_the_others() -> None:
    model, x = quantized_net(), images(4)
    before = snapshot(model)
    for methods in (["gradcam"], ["eigencam", "layercam"]):
        with pytest.raises(cl.UnsupportedModelError, match=r"^evaluate needs gradients.*quantized") as info:
            evaluate(model, methods, TensorDataset(x), layer="body.3", progress=False)
        assert isinstance(info.value, ValueError | TypeError | RuntimeError)
    res = evaluate(model, "eigencam", TensorDataset(x), layer="body.3", intervals=4, progress=False)
    assert_unchanged(model, before)
    assert_numbers(res, [brute_force(model, "eigencam", x, "body.3", intervals=4)])


def test_a_model_on_the_meta_device_is_refused_before_work() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, device="meta"), nn.ReLU(), nn.Flatten(), nn.Linear(144, 5, device="meta")
    )
    with pytest.raises(cl.UnsupportedModelError, match=r"^evaluate cannot run a model on the meta device"):
        evaluate(model, "gradcam", TensorDataset(images(2)), layer="1", progress=False)


def test_forward_args_or_a_batch_on_another_device_are_refused_before_any_forward(
    forwards: tuple[nn.Module, list[str]],
) -> None:
    model, calls = forwards
    with pytest.raises(
        cl.DeviceMismatchError, match="the model is on cpu but a tensor of forward_args is on meta"
    ):
        evaluate(model, "gradcam", [images(2)], layer="3", forward_args=(torch.zeros(2, device="meta"),))
    with pytest.raises(
        cl.DeviceMismatchError, match="the model is on cpu but a tensor of the input is on meta"
    ):
        evaluate(model, "gradcam", [images(2).to("meta")], layer="3")
    assert calls == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_forward_args_on_another_device_are_refused_before_work(
    forwards: tuple[nn.Module, list[str]],
) -> None:
    model, calls = forwards
    with pytest.raises(cl.DeviceMismatchError, match="forward_args is on cuda"):
        evaluate(
            model,
            "gradcam",
            TensorDataset(images(2)),
            layer="3",
            forward_args=(torch.zeros(2, device="cuda"),),
        )
    assert calls == []


def test_a_bfloat16_model_gives_the_float32_numbers_to_the_documented_tolerance() -> None:
    """The docstring's promise: the AUCs and the average drop within four bfloat16 epsilons."""
    x = images(6)
    kwargs: dict[str, Any] = {"layer": "3", "intervals": 4, "baseline": "blur", "progress": False}
    full = evaluate(small_net(), ["gradcam", "scorecam"], TensorDataset(x), **kwargs)
    half = evaluate(small_net().to(torch.bfloat16), ["gradcam", "scorecam"], TensorDataset(x), **kwargs)
    got = torch.tensor(numbers(half), dtype=torch.float64) / SCALES
    expected = torch.tensor(numbers(full), dtype=torch.float64) / SCALES
    torch.testing.assert_close(got[:, :3], expected[:, :3], **tolerance(torch.bfloat16, roundings=4))


def test_forward_args_follow_the_order_a_shuffling_dataloader_reads_not_the_dataset_index() -> None:
    # Documented in evaluate's docstring (as top_examples'): row i of a data-length tensor goes with
    # the i-th example read.
    model, x, mask = Conditioned(small_net()), images(5), masks()
    kwargs: dict[str, Any] = {"layer": "net.3", "intervals": 3, "progress": False}

    def loader(*tensors: Tensor) -> DataLoader[Any]:
        return DataLoader(
            TensorDataset(*tensors), batch_size=2, shuffle=True, generator=torch.Generator().manual_seed(3)
        )

    order = torch.cat([index for _, index in loader(x, torch.arange(5))]).tolist()
    assert order != sorted(order), "the seed must shuffle"
    res = evaluate(model, "gradcam", loader(x), forward_args=(mask,), **kwargs)

    def alone(rows: list[int]) -> list[list[float]]:  # example order[j] with mask row rows[j], the mean
        found = [
            numbers(
                evaluate(
                    Bound(model, mask[r : r + 1], 1.0),
                    "gradcam",
                    [x[i : i + 1]],
                    **{**kwargs, "layer": "model.net.3"},
                )
            )
            for i, r in zip(order, rows, strict=True)
        ]
        mean: list[list[float]] = torch.tensor(found, dtype=torch.float64).mean(0).tolist()
        return mean

    assert_numbers(res, alone(list(range(5))))  # the i-th example read gets mask[i]
    by_index = alone(order)
    assert not all(math.isclose(a, b) for a, b in zip(numbers(res)[0], by_index[0], strict=True))
    doc = " ".join((evaluate.__doc__ or "").split())
    assert "With a shuffling DataLoader, row ``i`` goes with the ``i``-th example read" in doc
