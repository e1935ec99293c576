from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from convlens.cli import main


def test_shapes_prints_the_lecture_alexnet_table(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torchvision")
    assert main(["shapes", "torchvision:alexnet"]) == 0
    out = capsys.readouterr().out
    assert "floor((224 + 2*2 - 1*(11-1) - 1) / 4) + 1 = 55" in out
    assert "1, 256, 6, 6" in out
    assert "total" in out.lower()


def test_shapes_markdown_and_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["shapes", "convlens:alphago_policy", "--input", "2,48,19,19", "--markdown"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("|")
    assert "2, 192, 19, 19" in out


def test_layers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["layers", "convlens:alphago_policy"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "type", "params", "leaf"]
    assert lines[2].split() == ["features.0", "Conv2d", str(48 * 192 * 25 + 192), "yes"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["shapes", "torchvision:alexnt"], "Did you mean 'alexnet'"),
        (["shapes", "convlens:alphago_policy", "--input", "1,3,a"], "--input must be integers"),
        (
            ["shapes", "convlens:alphago_policy", "--input", "1,3,19,19"],
            "features.0 expects 48 input channels, got 3",
        ),
        (["layers", "nowhere/net.py:build"], "does not exist"),
    ],
)
def test_errors_are_one_line_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if "torchvision" in argv[1]:
        pytest.importorskip("torchvision")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.startswith("convlens: error: ")
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_console_script_runs(tmp_path: Path) -> None:
    source = tmp_path / "tiny.py"
    source.write_text("import torch.nn as nn\ndef build():\n    return nn.Sequential(nn.Conv1d(2, 4, 3))\n")
    done = subprocess.run(
        [sys.executable, "-m", "convlens.cli", "shapes", f"{source}:build", "--input", "1,2,10"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "1, 4, 8" in done.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "convlens.cli", "shapes", f"{source}:nope"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr
