"""convlens.concepts over a dataset, against independent references.

scikit-learn's NMF on the same activations held in memory, planted factors, a brute-force ranking
of every example under the bank, the receptive field worked out by hand, and each concept's
ablation (its component removed from the layer, the rest of the network run) for the importance.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from sklearn.decomposition import NMF
from torch import Tensor, nn
from torch.utils.data import TensorDataset

import convlens as cl
from convlens.featureviz.importance import ImportanceMethod
from convlens.featureviz.nmf import solve_codes
from convlens.models.zoo import digits_cnn, digits_dataset
from test_nmf import matched_cosines, planted

LAYER = "features.4"  # the digits CNN's last conv layer, after its ReLU: (N, 16, 8, 8)


@pytest.fixture(scope="module")
def digits() -> tuple[nn.Module, Any, Tensor, Tensor]:
    data = digits_dataset("test")
    x = torch.stack([data[i][0] for i in range(len(data))])
    y = torch.tensor([int(data[i][1]) for i in range(len(data))])
    return digits_cnn(), data, x, y


@pytest.fixture(scope="module")
def result(digits: tuple[nn.Module, Any, Tensor, Tensor]) -> cl.ConceptsResult:
    model, data, _, _ = digits
    return cl.concepts(model, LAYER, data, 8, k=5, target="label", batch_size=50, progress=False)


def part(model: nn.Module, name: str) -> nn.Sequential:
    block = getattr(model, name)
    assert isinstance(block, nn.Sequential)
    return block


def activations(model: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        out: Tensor = part(model, "features")[:5](x)
    return out


def rows_of(a: Tensor) -> Tensor:
    return a.permute(0, 2, 3, 1).reshape(-1, a.shape[1])


@pytest.mark.filterwarnings(
    "ignore::sklearn.exceptions.ConvergenceWarning"
)  # 1000 iterations: converged enough
def test_the_fit_is_within_5_percent_of_scikit_learns_nmf(
    digits: tuple[nn.Module, Any, Tensor, Tensor], result: cl.ConceptsResult
) -> None:
    model, _, x, _ = digits
    rows = rows_of(activations(model, x)).double().numpy()
    reference = NMF(8, init="nndsvda", max_iter=1000, tol=1e-6, random_state=0)
    codes = reference.fit_transform(rows)
    theirs = float(np.linalg.norm(rows - codes @ reference.components_) / np.linalg.norm(rows))
    assert result.error <= 1.05 * theirs, (result.error, theirs)


def test_error_and_explained_variance_are_those_of_the_bank_on_every_position(
    digits: tuple[nn.Module, Any, Tensor, Tensor], result: cl.ConceptsResult
) -> None:
    model, _, x, _ = digits
    rows = rows_of(activations(model, x)).double()
    residual = rows - solve_codes(rows.float(), result.bank).double() @ result.bank.double()
    error = float(residual.norm() / rows.norm())
    explained = 1 - float(residual.square().sum() / (rows - rows.mean(0)).square().sum())
    assert result.error == pytest.approx(error, rel=1e-4)
    assert result.explained == pytest.approx(explained, rel=1e-4)
    assert result.examples == len(x)


def test_planted_factors_are_recovered_through_a_model_and_a_dataset() -> None:
    x, truth = planted(4, 12, 40 * 36, noise=0.02, seed=11)
    maps = x.view(40, 6, 6, 12).permute(0, 3, 1, 2).contiguous()  # 40 pictures of 6x6 positions
    res = cl.concepts(
        nn.Sequential(nn.Identity()), "0", TensorDataset(maps), 4, importance=False, progress=False
    )
    assert matched_cosines(res.bank, truth).min() >= 0.95


def test_the_top_examples_are_the_brute_force_ranking_under_the_bank(
    digits: tuple[nn.Module, Any, Tensor, Tensor], result: cl.ConceptsResult
) -> None:
    model, _, x, _ = digits
    a = activations(model, x)
    codes = solve_codes(rows_of(a), result.bank).view(len(x), 64, 8)  # (N, positions, n)
    peak = codes.amax(1).T  # (n, N)
    tolerance = 1e-4 * float(peak.max())
    best = torch.sort(peak, dim=1, descending=True, stable=True)
    torch.testing.assert_close(result.strengths, best.values[:, :5], rtol=0, atol=tolerance)
    for i in range(8):  # each kept example's own peak is its strength
        torch.testing.assert_close(peak[i, result.indices[i]], result.strengths[i], rtol=0, atol=tolerance)
    assert result.inputs is not None
    assert torch.equal(result.inputs, x[result.indices])


def test_positions_boxes_and_maps_of_the_top_examples(result: cl.ConceptsResult) -> None:
    assert result.maps is not None
    assert result.positions is not None
    assert result.boxes is not None
    assert result.maps.shape == (8, 5, 8, 8)
    flat = result.maps.flatten(2)
    tolerance = 1e-4 * float(flat.max())
    torch.testing.assert_close(flat.amax(2), result.strengths, rtol=0, atol=tolerance)
    rows, cols = result.positions[..., 0], result.positions[..., 1]
    at_peak = result.maps[torch.arange(8)[:, None], torch.arange(5)[None, :], rows, cols]
    torch.testing.assert_close(at_peak, result.strengths, rtol=0, atol=tolerance)
    # conv 5x5 -> pool 2 -> conv 5x5: a field of 5 + 4 * 2 = 14 pixels, a jump of 2, from 0.
    starts = result.positions * 2
    torch.testing.assert_close(result.boxes, torch.cat([starts, (starts + 14).clamp(max=28)], dim=-1))
    heat = result.heatmaps()
    assert heat.shape == (8, 5, 28, 28)
    assert float(heat.min()) >= 0
    assert float(heat.max()) <= 1


def test_transform_gives_the_maps_of_new_pictures(result: cl.ConceptsResult) -> None:
    assert result.inputs is not None
    assert result.maps is not None
    got = result.transform(result.inputs[2])  # concept 2's top examples
    assert got.shape == (5, 8, 8, 8)
    assert bool((got >= 0).all())
    torch.testing.assert_close(got[:, 2], result.maps[2], rtol=1e-4, atol=1e-4 * float(result.maps.max()))


def test_concepts_come_most_used_first_and_the_bank_is_unit_length(
    digits: tuple[nn.Module, Any, Tensor, Tensor], result: cl.ConceptsResult
) -> None:
    model, _, x, _ = digits
    mass = solve_codes(rows_of(activations(model, x)), result.bank).sum(0)
    assert bool((mass[:-1] >= mass[1:] * (1 - 1e-4)).all())
    torch.testing.assert_close(result.bank.norm(dim=1), torch.ones(8))
    assert bool((result.bank >= 0).all())


def test_importance_ranks_concepts_as_their_ablation_does(
    digits: tuple[nn.Module, Any, Tensor, Tensor], result: cl.ConceptsResult
) -> None:
    """Remove a concept's component from the layer, run the rest, measure the drop of the class score."""
    model, _, x, y = digits
    assert result.importance is not None
    assert result.classes is not None
    assert result.class_counts is not None
    assert result.classes.tolist() == list(range(10))
    assert result.class_counts.tolist() == torch.bincount(y).tolist()
    a = activations(model, x)
    codes = solve_codes(rows_of(a), result.bank)

    def score(layer: Tensor) -> Tensor:
        with torch.no_grad():
            out: Tensor = part(model, "classifier")(torch.flatten(part(model, "features")[5](layer), 1))
        return out.gather(1, y[:, None]).squeeze(1)

    base = score(a)
    drops = torch.stack(
        [
            base
            - score(a - (codes[:, i : i + 1] * result.bank[i]).view(len(x), 8, 8, 16).permute(0, 3, 1, 2))
            for i in range(8)
        ],
        dim=1,
    )
    rhos = [
        spearmanr(result.importance[c].numpy(), drops[y == c].mean(0).numpy()).statistic for c in range(10)
    ]
    assert float(np.mean(rhos)) >= 0.8, rhos


def ablation_drops(model: nn.Module, x: Tensor, y: Tensor, bank: Tensor) -> Tensor:
    """Each example's score lost ``(N, n)`` when each concept's component is removed at the layer."""
    a = activations(model, x)
    codes = solve_codes(rows_of(a), bank)
    n = len(bank)

    def score(layer: Tensor) -> Tensor:
        with torch.no_grad():
            out: Tensor = part(model, "classifier")(torch.flatten(part(model, "features")[5](layer), 1))
        return out.gather(1, y[:, None]).squeeze(1)

    removed = [(codes[:, i : i + 1] * bank[i]).view(len(x), 8, 8, 16).permute(0, 3, 1, 2) for i in range(n)]
    return torch.stack([score(a) - score(a - c) for c in removed], dim=1)


def test_ablation_importance_is_the_measured_drop(digits: tuple[nn.Module, Any, Tensor, Tensor]) -> None:
    model, data, x, y = digits
    res = cl.concepts(model, LAYER, data, 4, k=2, target="label", importance="ablation", progress=False)
    assert res.importance is not None
    assert res.classes is not None
    drops = ablation_drops(model, x, y, res.bank)
    expected = torch.stack([drops[y == c].mean(0) for c in res.classes.tolist()])
    torch.testing.assert_close(res.importance, expected, rtol=0, atol=1e-4 * float(expected.abs().max()))


class KeepsItsBatch(nn.Module):
    """The digits CNN written with the input's batch size carried past the layer (a larger batch breaks it)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.features, self.classifier = part(net, "features"), part(net, "classifier")

    def forward(self, x: Tensor) -> Tensor:
        batch = x.shape[0]
        out: Tensor = self.classifier(self.features(x).reshape(batch, 256))
        return out


def test_ablation_runs_one_forward_per_concept_where_the_batch_cannot_grow(
    digits: tuple[nn.Module, Any, Tensor, Tensor],
) -> None:
    model, _, x, y = digits
    data = TensorDataset(x[:40], y[:40])
    plain = cl.concepts(model, LAYER, data, 3, k=2, target="label", importance="ablation", progress=False)
    kept = cl.concepts(
        KeepsItsBatch(model), LAYER, data, 3, k=2, target="label", importance="ablation", progress=False
    )
    assert plain.importance is not None
    assert kept.importance is not None
    torch.testing.assert_close(
        kept.importance, plain.importance, rtol=0, atol=1e-5 * float(plain.importance.abs().max())
    )
    with pytest.raises(cl.InvalidArgumentError, match="reshape=None"):
        cl.concepts(model, LAYER, data, 3, importance="ablation", reshape=lambda t: t, progress=False)


def test_the_same_seed_gives_the_same_result(digits: tuple[nn.Module, Any, Tensor, Tensor]) -> None:
    model, data, _, _ = digits
    first, second = (
        cl.concepts(model, LAYER, data, 3, k=2, importance=False, progress=False) for _ in range(2)
    )
    assert torch.equal(first.bank, second.bank)
    assert torch.equal(first.indices, second.indices)
    other = cl.concepts(model, LAYER, data, 3, k=2, seed=1, importance=False, progress=False)
    assert not torch.equal(other.bank, first.bank)  # the seed orders the positions and draws the sample


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
@pytest.mark.parametrize("importance", ["gradient", "ablation", None])
def test_float64_and_bfloat16_models(
    digits: tuple[nn.Module, Any, Tensor, Tensor], dtype: torch.dtype, importance: ImportanceMethod | None
) -> None:
    """Coefficients and errors are computed in float32 at least; the result matches the float32 model's."""
    model, _, x, y = digits
    data = TensorDataset(x[:64], y[:64])
    reference = cl.concepts(model, LAYER, data, 3, k=2, target="label", importance=importance, progress=False)
    other = copy.deepcopy(model).to(dtype)
    got = cl.concepts(other, LAYER, TensorDataset(x[:64].to(dtype), y[:64]), 3, k=2, target="label",
                      importance=importance, bank=reference.bank, progress=False)  # fmt: skip
    eps = max(torch.finfo(dtype).eps, torch.finfo(torch.float32).eps)  # against a float32 reference
    assert got.error == pytest.approx(reference.error, abs=64 * eps)
    if importance is not None:
        assert got.importance is not None
        assert reference.importance is not None
        scale = float(reference.importance.abs().max())
        torch.testing.assert_close(
            got.importance.float(), reference.importance, rtol=0, atol=64 * eps * scale
        )


class ChannelsLast(nn.Module):
    """The digits CNN's features with its last ReLU run on (N, H, W, C): the layer 'act' is channels last."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.features, self.classifier = part(net, "features"), part(net, "classifier")
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        conv = self.features[:4](x).permute(0, 2, 3, 1)
        back = self.act(conv).permute(0, 3, 1, 2)
        out: Tensor = self.classifier(torch.flatten(self.features[5](back), 1))
        return out


def test_a_reshaped_layer_has_the_channels_first_layer_s_concepts_and_importance(
    digits: tuple[nn.Module, Any, Tensor, Tensor], result: cl.ConceptsResult
) -> None:
    model, data, _, _ = digits
    got = cl.concepts(ChannelsLast(model), "act", data, 8, k=5, target="label", reshape="channels_last",
                      bank=result.bank, progress=False)  # fmt: skip
    assert torch.equal(got.indices, result.indices)
    assert got.importance is not None
    assert result.importance is not None
    scale = float(result.importance.abs().max())
    torch.testing.assert_close(got.importance, result.importance, rtol=0, atol=1e-4 * scale)


def test_a_given_bank_is_used_as_it_is(
    digits: tuple[nn.Module, Any, Tensor, Tensor], result: cl.ConceptsResult
) -> None:
    model, data, _, _ = digits
    flipped = result.bank.flip(0)  # the least used first: a given bank keeps its order
    again = cl.concepts(model, LAYER, data, 8, k=5, target="label", bank=flipped, progress=False)
    torch.testing.assert_close(again.bank, flipped)
    assert torch.equal(again.indices, result.indices.flip(0))
    assert again.importance is not None
    assert result.importance is not None
    torch.testing.assert_close(again.importance, result.importance.flip(1))


def test_semi_nmf_reads_a_signed_layer_and_nmf_names_the_fix(
    digits: tuple[nn.Module, Any, Tensor, Tensor],
) -> None:
    model, data, _, _ = digits
    with pytest.raises(cl.InvalidArgumentError, match=r"nonnegative.*'features\.3'.*semi-nmf"):
        cl.concepts(model, "features.3", data, 4, progress=False)
    res = cl.concepts(model, "features.3", data, 4, method="semi-nmf", k=2, importance=False, progress=False)
    assert bool((res.bank < 0).any())
    assert 0.3 < res.explained <= 1
    assert res.maps is not None
    assert bool((res.maps >= 0).all())


def test_without_inputs_or_importance(digits: tuple[nn.Module, Any, Tensor, Tensor]) -> None:
    model, data, _, _ = digits
    res = cl.concepts(model, LAYER, data, 3, k=2, importance=False, keep_inputs=False, progress=False)
    assert res.inputs is None
    assert res.maps is None
    assert res.importance is None
    assert res.classes is None
    assert res.top_classes(0) == []
    with pytest.raises(cl.InvalidArgumentError, match="keep_inputs=True"):
        res.heatmaps()


def test_the_predicted_class_or_one_class(digits: tuple[nn.Module, Any, Tensor, Tensor]) -> None:
    model, data, x, _ = digits
    predicted = cl.concepts(model, LAYER, data, 3, k=1, keep_inputs=False, progress=False)
    with torch.no_grad():
        counts = torch.bincount(model(x).argmax(1), minlength=10)
    assert predicted.class_counts is not None
    assert predicted.classes is not None
    assert predicted.class_counts.tolist() == counts[counts > 0].tolist()
    one = cl.concepts(model, LAYER, data, 3, k=1, target=7, keep_inputs=False, progress=False)
    assert one.classes is not None
    assert one.classes.tolist() == [7]
    assert one.importance is not None
    assert one.importance.shape == (1, 3)
    assert one.top_classes(0)[0][0] == 7


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"n": 17}, cl.InvalidArgumentError, r"n=17 .*16 channels"),
        ({"n": 0}, cl.InvalidArgumentError, r"\bn\b"),
        ({"k": 0}, cl.InvalidArgumentError, r"\bk\b"),
        ({"method": "nfm"}, cl.InvalidArgumentError, r"'nmf'"),
        ({"target": "labels"}, cl.InvalidArgumentError, r"'label'"),
        ({"importance": "ablate"}, cl.InvalidArgumentError, r"'ablation'"),
        ({"target": 10}, cl.InvalidArgumentError, r"target 10 is out of range: .* 10 scores"),
        ({"bank": torch.rand(2, 16)}, cl.InvalidArgumentError, r"n=3 rows; got \(2, 16\)"),
        ({"bank": -torch.rand(3, 16)}, cl.InvalidArgumentError, r"semi-nmf"),
        ({"bank": [[1.0] * 16] * 3}, cl.InvalidTypeError, r"bank"),
        ({"layer": "features.44"}, cl.LayerNotFoundError, r"features\.4"),
    ],
)
def test_bad_arguments_are_named(
    digits: tuple[nn.Module, Any, Tensor, Tensor],
    kwargs: dict[str, Any],
    error: type[Exception],
    pattern: str,
) -> None:
    model, data, _, _ = digits
    options = {"layer": LAYER, "n": 3, **kwargs}
    layer, n = options.pop("layer"), options.pop("n")
    with pytest.raises(error, match=pattern):
        cl.concepts(model, layer, data, n, progress=False, **options)


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        ({"target": 12}, "target 12 is out of range"),
        ({"target": "label", "labelled": False}, "target='label' needs items"),
        ({"n": 17}, "n=17 concepts"),
        ({"bank": torch.rand(3, 12)}, r"\(3, 16\)"),
    ],
)
def test_refusals_come_before_any_real_forward(
    digits: tuple[nn.Module, Any, Tensor, Tensor], options: dict[str, Any], pattern: str
) -> None:
    model, data, x, _ = digits
    options = dict(options)
    data = data if options.pop("labelled", True) else TensorDataset(x)
    n = options.pop("n", 3)
    calls: list[bool] = []  # the first conv runs in every real forward; the probe's tensors are meta
    hook = part(model, "features")[0].register_forward_hook(lambda _m, _i, out: calls.append(not out.is_meta))
    try:
        with pytest.raises(cl.InvalidArgumentError, match=pattern):
            cl.concepts(model, LAYER, data, n, progress=False, **options)
    finally:
        hook.remove()
    assert calls, "the probe reaches the first conv"
    assert not any(calls), calls


def test_a_layer_without_a_grid_has_no_heat_maps(digits: tuple[nn.Module, Any, Tensor, Tensor]) -> None:
    model, data, _, _ = digits
    res = cl.concepts(model, "classifier.1", data, 3, k=2, importance=False, progress=False)
    assert res.maps is not None
    assert res.maps.shape == (3, 2)
    assert res.positions is None
    assert res.boxes is None
    with pytest.raises(cl.InvalidArgumentError, match="no spatial grid"):
        res.heatmaps()


def test_label_targets_need_labels_and_data_must_hold_examples(
    digits: tuple[nn.Module, Any, Tensor, Tensor],
) -> None:
    model, _, x, _ = digits
    with pytest.raises(cl.InvalidArgumentError, match="target='label'"):
        cl.concepts(model, LAYER, TensorDataset(x[:8]), 2, target="label", progress=False)
    with pytest.raises(cl.InvalidArgumentError, match="empty"):
        cl.concepts(model, LAYER, TensorDataset(x[:0]), 2, progress=False)
