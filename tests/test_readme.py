"""The README's quickstart must run as written (so it cannot drift from the library)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.mark.slow
def test_quickstart_runs(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torchvision")
    text = README.read_text()
    quickstart = text[text.index("## Quickstart") :]
    match = re.search(r"```python\n(.*?)```", quickstart, flags=re.DOTALL)
    assert match is not None, "README's quickstart has no python block"
    namespace: dict[str, object] = {}
    exec(compile(match.group(1), str(README), "exec"), namespace)
    assert "floor((224 + 2*2 - 1*(11-1) - 1) / 4) + 1 = 55" in capsys.readouterr().out
    assert tuple(namespace["out"].maps.shape) == (1, 224, 224)  # type: ignore[attr-defined]
    assert tuple(namespace["res"].image.shape) == (1, 1, 28, 28)  # type: ignore[attr-defined]
    assert tuple(namespace["best"].indices.shape) == (16, 9)  # type: ignore[attr-defined]
    assert namespace["scores"].methods == ("gradcam", "layercam")  # type: ignore[attr-defined]


def test_two_setup_commands() -> None:
    text = README.read_text()
    for marker in ("<!-- main-command -->", "<!-- test-command -->"):
        block = text[text.index(marker) :].split("```")[1]
        assert block.startswith("bash\npython3 -m venv .venv && .venv/bin/pip install -e")
    assert "convlens tour" in text[text.index("<!-- main-command -->") :].split("```")[1]
