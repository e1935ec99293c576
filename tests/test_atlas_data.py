"""The atlas and the user's data: labels read where the data has them, circuits it cannot measure, layer order."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler, Subset, TensorDataset

import convlens as cl
from convlens.apps.atlas import build_atlas
from convlens.apps.atlas_units import labels_of
from convlens.errors import InvalidArgumentError


class Named(TensorDataset):
    classes: ClassVar[list[str]] = ["zero", "one", "two"]


def test_labels_are_read_where_the_data_says_which_example_is_which() -> None:
    x = torch.zeros(4, 1, 4, 4)
    named = Named(x, torch.tensor([2, 0, 1, -1]))
    label, names = labels_of(named)
    assert label is not None
    assert [label(i) for i in range(4)] == [2, 0, 1, None]  # -1: unlabelled, no class
    assert names == ["zero", "one", "two"]
    label, names = labels_of(Subset(named, [2, 0]))  # positions in the subset, names of its dataset
    assert label is not None
    assert ([label(0), label(1)], names) == ([1, 2], ["zero", "one", "two"])
    label, _ = labels_of(DataLoader(named, batch_size=2))  # read in order: the dataset's own indices
    assert label is not None
    assert label(0) == 2
    for other in (
        DataLoader(named, batch_size=2, shuffle=True),
        DataLoader(named, batch_sampler=[[3, 2], [1, 0]]),  # a batch sampler of its own: another order
        iter([(x, torch.zeros(4))]),
    ):
        assert labels_of(other) == (None, None)
    ordered = DataLoader(named, batch_sampler=BatchSampler(SequentialSampler(named), 2, drop_last=False))
    assert labels_of(ordered)[0] is not None


@pytest.mark.parametrize(
    "y",
    [torch.tensor([0.5, 1.0]), torch.tensor([True, False]), torch.eye(2)],
    ids=["float", "bool", "one-hot"],
)
def test_labels_that_are_no_class_are_none(y: torch.Tensor) -> None:
    label, _ = labels_of(TensorDataset(torch.zeros(2, 1, 4, 4), y))
    assert label is not None
    assert [label(0), label(1)] == [None, None]


def test_a_circuit_measured_neither_way_says_why_and_is_not_measured_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from convlens.apps import atlas_circuits

    def refuse(*_args: object, **kwargs: object) -> object:
        raise InvalidArgumentError(f"cannot read these layers ({kwargs['method']})")

    monkeypatch.setattr(atlas_circuits, "connections", refuse)
    options: dict[str, object] = {"layers": ["features.0", "features.3"], "units": 2, "k": 2, "steps": 2}
    options |= {"progress": False, "concepts": 0}
    model, data = cl.zoo.digits_cnn(), cl.zoo.digits_dataset("test")
    build_atlas(model, data, tmp_path, **options)  # type: ignore[arg-type]
    (entry,) = [json.loads(p.read_text()) for p in (tmp_path / "_cache").glob("*/circuits.json")]
    assert (entry["method"], entry["reason"]) == ("none", "cannot read these layers (attribution)")
    later = (tmp_path / "units" / "features.3" / "0.html").read_text()
    earlier = (tmp_path / "units" / "features.0" / "1.html").read_text()
    assert "No strengths between features.0 and features.3: cannot read these layers (attribution)." in later
    assert "No strengths between features.0 and features.3" in earlier  # its "feeds" side says it too
    passes: list[object] = []
    real = cl.NeuronVisualizer.top_examples

    def counted(*args: object, **kwargs: object) -> object:
        passes.append(args)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(cl.NeuronVisualizer, "top_examples", counted)
    again = build_atlas(model, data, tmp_path, **options)  # type: ignore[arg-type]
    assert (again.reused, passes) == (4, [])  # everything from the cache: no data pass to retry it


def test_a_container_and_its_last_layer_are_drawn_inner_first(tmp_path: Path) -> None:
    """``layer1`` ends where ``layer1.1`` does: the inner one runs first, so it comes first."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=4).eval()
    data = TensorDataset(torch.randn(3, 3, 32, 32))
    site = build_atlas(
        model, data, tmp_path, layers=["layer1", "layer1.1"], units=1, k=1, steps=1, concepts=0,
        progress=False, preset="imagenet",
    )  # fmt: skip
    assert site.layers == ("layer1.1", "layer1")
    (entry,) = [json.loads(p.read_text()) for p in (tmp_path / "_cache").glob("*/circuits.json")]
    assert (entry["earlier"], entry["later"], entry["method"]) == ("layer1.1", "layer1", "attribution")
    (row,) = entry["strengths"]  # layer1 returns layer1.1's output: unit 0 is fed by channel 0 alone
    assert row[0] > 0
    assert all(value == 0 for value in row[1:])
