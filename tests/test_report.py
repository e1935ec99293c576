from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
from torch import nn

import convlens as cl
from convlens.core.report import TracedCall, build_report, shape_error
from convlens.errors import TracedRows
from models import ReusedNet

GOLDEN = Path(__file__).parent / "golden"
UPDATE_GOLDEN = os.environ.get("CONVLENS_UPDATE_GOLDEN") == "1"


def torchvision_models() -> Any:
    return pytest.importorskip("torchvision").models


def test_alexnet_table_golden(alexnet_report: cl.ShapeReport) -> None:
    text = str(alexnet_report) + "\n"
    path = GOLDEN / "alexnet_224.txt"
    if UPDATE_GOLDEN:
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), "table changed; rerun with CONVLENS_UPDATE_GOLDEN=1 if intended"
    lines = text.splitlines()
    assert lines[0].split() == ["name", "type", "in", "out", "params", "MACs", "RF", "jump", "formula"]
    assert re.match(
        r"total\s+AlexNet\s+\[1, 3, 224, 224\]\s+\[1, 1000\]\s+61,100,840\s+714,188,480$", lines[-2]
    )
    assert lines[-1] == "traced on the meta device (no arithmetic)"


def test_to_markdown(alexnet_report: cl.ShapeReport) -> None:
    lines = alexnet_report.to_markdown().splitlines()
    assert lines[0] == "| name | type | in | out | params | MACs | RF | jump | formula |"
    assert lines[1] == "|---|---|---|---|---:|---:|---:|---:|---|"
    assert lines[2] == (
        "| features.0 | Conv2d | [1, 3, 224, 224] | [1, 64, 55, 55] | 23,296 | 70,276,800 | 11 | 4 "
        "| floor((224 + 2*2 - 1*(11-1) - 1) / 4) + 1 = 55 |"
    )
    assert lines[-3].startswith("| **total** | AlexNet | [1, 3, 224, 224] | [1, 1000] | 61,100,840 |")
    assert all(line.count("|") == 10 for line in lines[:-2])


# -- report lookup -----------------------------------------------------------------------------


def test_lookup_errors(reused_net: ReusedNet) -> None:
    report = cl.trace_shapes(reused_net, (1, 3, 8, 8))
    assert report.names == ["conv1", "relu#0", "conv2", "relu#1", "fc", "relu#2"]
    assert report["relu#1"].output_shape == (1, 4, 8, 8)
    assert report[-1].name == "relu#2"
    assert report["conv1#0"] is report["conv1"]
    assert "fc" in report
    assert "relu" not in report
    with pytest.raises(cl.AmbiguousLayerError, match=r"'relu' ran 3 times .* 'relu#0', 'relu#1', 'relu#2'"):
        report["relu"]
    with pytest.raises(
        cl.LayerNotFoundError, match=r"'relu#3' does not exist: 'relu' ran 3 times \(#0 to #2\)"
    ):
        report["relu#3"]
    with pytest.raises(cl.LayerNotFoundError, match=r"no layer 'conv3'\. Did you mean 'conv2'\?"):
        report["conv3"]
    with pytest.raises(KeyError):
        report["nope"]
    with pytest.raises(cl.InvalidTypeError, match="indexed by layer name or position"):
        report[1.5]  # type: ignore[index]


def test_print_has_a_total_row(reused_net: ReusedNet) -> None:
    text = str(cl.trace_shapes(reused_net, (1, 3, 8, 8)))
    params = sum(p.numel() for p in reused_net.parameters())
    macs = 4 * 8 * 8 * 3 * 9 + 4 * 8 * 8 * 4 * 9 + 5 * 4  # conv1 + conv2 + fc, by hand
    assert (params, macs) == (285, 16_148)
    assert re.search(r"^total\s+ReusedNet\s+\[1, 3, 8, 8\]\s+\[1, 5\]\s+285\s+16,148$", text, re.MULTILINE)


# -- building a report from recorded calls -------------------------------------------------------


def test_build_report_from_calls_without_a_forward() -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(18, 2))
    names = {id(m): n for n, m in net.named_modules()}
    calls = [
        TracedCall(net[0], (1, 1, 5, 5), -1, (1, 2, 3, 3)),
        TracedCall(net[1], (1, 2, 3, 3), 0, (1, 2, 3, 3)),
        TracedCall(net[2], (1, 2, 3, 3), 1, (1, 18)),
        TracedCall(net[3], (1, 18), 2),  # the call that failed: no row
    ]
    report = build_report(net, names, calls, input_shape=(1, 1, 5, 5), output_shape=(), traced="real")
    assert report.names == ["0", "1", "2"]
    assert [row.receptive_field for row in report] == [3, 3, None]
    assert report.params == sum(p.numel() for p in net.parameters())
    assert report.macs == report["0"].macs == 2 * 3 * 3 * 9
    assert str(report).splitlines()[-1] == "traced by a real forward"


def test_shape_error_carries_the_rows_before_the_failure() -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Linear(4, 2))
    names = {id(m): n for n, m in net.named_modules()}
    calls = [TracedCall(net[0], (1, 1, 5, 5), -1, (1, 2, 3, 3)), TracedCall(net[1], (1, 2, 3, 3), 0)]
    err = shape_error(
        net, names, calls, "1 expects 4 input features, got 3.", input_shape=(1, 1, 5, 5), real=False
    )
    assert (
        str(err)
        == "1 expects 4 input features, got 3. The 1 layer calls traced before the failure are in err.report."
    )
    rows: TracedRows | None = err.report
    assert rows is not None
    assert (rows.names, rows.traced, len(rows)) == (["0"], "meta", 1)
    assert rows.to_markdown().endswith(
        "traced on the meta device (no arithmetic); stopped at the failure: "
        "1 expects 4 input features, got 3."
    )
    as_protocol: TracedRows = cl.trace_shapes(net[:1], (1, 1, 5, 5))  # a ShapeReport is one, for mypy
    assert [row.name for row in as_protocol] == ["0"]
