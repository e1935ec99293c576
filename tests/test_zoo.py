from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import convlens as cl
from convlens import zoo
from invariants import assert_unchanged, snapshot


def test_alphago_policy_as_the_lecture_describes_it() -> None:
    k = 192
    net = zoo.alphago_policy(k)
    report = cl.trace_shapes(net, (1, 48, 19, 19))
    convs = [row for row in report if row.type == "Conv2d"]
    assert len(convs) == 13  # 1 (5x5) + 11 (3x3) + 1 (1x1)
    for row in report:
        if len(row.output_shape) == 4:
            assert row.output_shape[-2:] == (19, 19), row.name
    assert convs[0].params == 48 * k * 5 * 5 + k
    assert all(row.params == k * k * 3 * 3 + k for row in convs[1:12])
    assert convs[12].params == k  # one 1x1 filter, no shared bias
    assert report["position_bias"].params == 19 * 19  # a different bias at each point
    # Zero padding to 23x23 (5x5 filters) and to 21x21 (3x3 filters) keeps 19x19.
    assert convs[0].formula == "floor((19 + 2*2 - 1*(5-1) - 1) / 1) + 1 = 19"
    assert convs[1].formula == "floor((19 + 2*1 - 1*(3-1) - 1) / 1) + 1 = 19"
    assert report.output_shape == (1, 361)
    total = 48 * k * 25 + k + 11 * (k * k * 9 + k) + k + 361
    assert report.params == total == sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("k", [128, 256, 384])
def test_alphago_policy_other_widths(k: int) -> None:
    net = zoo.alphago_policy(k)
    probs = net(torch.zeros(2, 48, 19, 19))
    assert probs.shape == (2, 361)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(2))
    assert net.get_parameter("features.22.weight").shape == (k, k, 3, 3)


def test_alphago_rejects_bad_width() -> None:
    with pytest.raises(cl.InvalidArgumentError, match="k must be a positive int; got 0"):
        zoo.alphago_policy(0)


def test_position_bias_is_per_position() -> None:
    net = zoo.alphago_policy(4)
    with torch.no_grad():
        net.head.weight.zero_()
        net.position_bias.bias[0, 0, 3, 4] = 5.0
    probs = net(torch.randn(1, 48, 19, 19))
    assert int(probs.argmax()) == 3 * 19 + 4


def test_create_is_seeded_and_keeps_global_rng() -> None:
    state = torch.random.get_rng_state()
    a = zoo.create("convlens:alphago_policy", seed=1)
    b = zoo.create("convlens:alphago_policy", seed=1)
    c = zoo.create("convlens:alphago_policy", seed=2)
    assert torch.equal(torch.random.get_rng_state(), state)
    weight = "features.0.weight"
    assert torch.equal(a.get_parameter(weight), b.get_parameter(weight))
    assert not torch.equal(a.get_parameter(weight), c.get_parameter(weight))
    assert not a.training


def test_create_torchvision() -> None:
    pytest.importorskip("torchvision")
    model = zoo.create("torchvision:alexnet")
    assert type(model).__name__ == "AlexNet"
    with pytest.raises(cl.InvalidArgumentError, match="Did you mean 'alexnet'"):
        zoo.create("torchvision:alexnt")


def test_create_from_file(tmp_path: Path) -> None:
    source = tmp_path / "my_net.py"
    source.write_text(
        "import torch.nn as nn\n"
        "def build():\n    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())\n"
        "def broken():\n    return 3\n"
    )
    model = zoo.create(f"{source}:build")
    assert isinstance(model, nn.Sequential)
    with pytest.raises(cl.InvalidArgumentError, match=r"has no function 'buld'\. Did you mean 'build'"):
        zoo.create(f"{source}:buld")
    with pytest.raises(cl.InvalidTypeError, match=r"returned int, not an nn\.Module"):
        zoo.create(f"{source}:broken")
    with pytest.raises(cl.InvalidArgumentError, match="does not exist"):
        zoo.create(f"{tmp_path / 'missing.py'}:build")
    (tmp_path / "bad.py").write_text("import no_such_module_here\n")
    with pytest.raises(cl.InvalidArgumentError, match="ModuleNotFoundError"):
        zoo.create(f"{tmp_path / 'bad.py'}:build")


@pytest.mark.parametrize("spec", ["alexnet", "torchvision:", "foo:bar", ":x"])
def test_bad_specs(spec: str) -> None:
    with pytest.raises(cl.InvalidArgumentError):
        zoo.create(spec)


def test_tracing_alphago_leaves_it_unchanged() -> None:
    net = zoo.alphago_policy(8).train()
    before = snapshot(net)
    cl.trace_shapes(net, (1, 48, 19, 19))
    cl.LayerTap(net, ["features.0", "head"]).run(torch.randn(1, 48, 19, 19))
    assert_unchanged(net, before)
