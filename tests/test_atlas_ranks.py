"""Every rank draws: the atlas's pictures as jobs shared out over torchrun's ranks, the site the same bytes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import convlens as cl
from convlens.apps.atlas import build_atlas
from convlens.apps.atlas_draw import Job, assign, chunk_size, unit_jobs
from convlens.apps.atlas_pictures import NO_INK
from convlens.apps.cli import main


def test_units_are_cut_into_whole_chunks_aligned_on_their_numbers_whatever_is_missing() -> None:
    fresh = unit_jobs("conv", range(10), size=4, seed=7, cost=1.5, total=10)
    assert [job.units for job in fresh] == [(0, 1, 2, 3), (4, 5, 6, 7), (8, 9)]
    assert [job.keep for job in fresh] == [(0, 1, 2, 3), (4, 5, 6, 7), (8, 9)]
    assert [job.seed for job in fresh] == [7, 11, 15]  # the seed plus where the chunk starts
    assert [job.cost for job in fresh] == [6.0, 6.0, 3.0]
    resumed = unit_jobs("conv", [5, 6, 9], size=4, seed=7, cost=1.5, total=10)  # the rest from the cache
    assert [(job.units, job.keep, job.seed) for job in resumed] == [
        ((4, 5, 6, 7), (5, 6), 11),
        ((8, 9), (9,), 15),
    ]
    shown = unit_jobs("conv", [0, 1], size=4, seed=7, cost=1.5, total=10)  # units=2: the chunk is drawn whole
    assert [(job.units, job.keep) for job in shown] == [((0, 1, 2, 3), (0, 1))]
    assert chunk_size(10**6) == 16
    assert chunk_size(10**9) == 4
    assert chunk_size(10**9, torch.device("cuda")) == 32  # a GPU is bound by its launches: bigger batches


def test_every_job_goes_to_one_rank_and_the_loads_stay_within_the_largest_job() -> None:
    costs = [9.0, 1.0, 4.0, 4.0, 3.0, 8.0, 2.0, 5.0]
    jobs = [Job(layer=f"l{i}", units=(i,), seed=0, cost=c) for i, c in enumerate(costs)]
    for world in (1, 2, 3, 5):
        owners = assign(jobs, world)
        assert len(owners) == len(jobs)
        assert set(owners) <= set(range(world))
        loads = [sum(c for c, o in zip(costs, owners, strict=True) if o == r) for r in range(world)]
        assert max(loads) - min(loads) <= max(costs)
        assert owners == assign(jobs, world)  # every rank computes the same assignment
    assert assign(jobs, 1) == [0] * len(jobs)
    two = assign(jobs, 2)
    assert sorted(sum(c for c, o in zip(costs, two, strict=True) if o == r) for r in (0, 1)) == [18.0, 18.0]


def test_the_digits_class_pictures_read_as_their_own_class(tmp_path: Path) -> None:
    """The no-ink recipe on the bounded picture: digits the model calls their class, mostly dark."""
    model = cl.zoo.digits_cnn()
    site = build_atlas(
        model, cl.zoo.digits_dataset("test"), tmp_path, layers=["classifier.2"], units=None, k=2,
        concepts=0, progress=False,
    )  # fmt: skip
    assert site.units == 10
    assert NO_INK > 0
    said, ink = {}, []
    for path in (tmp_path / "_cache").glob("*/unit.json"):
        unit = json.loads(path.read_text())["unit"]
        picture = Image.open(path.parent / "viz.png").convert("L")  # what the page shows, enlarged
        x = torch.tensor(np.asarray(picture.resize((28, 28), Image.Resampling.BILINEAR)), dtype=torch.float32)
        with torch.no_grad():
            said[unit] = int(model(x[None, None] / 255).argmax())
        ink.append(float(np.asarray(picture).mean()) / 255)
    assert said == {unit: unit for unit in range(10)}
    assert max(ink) < 0.35, ink  # not saturated noise: a digit's ink on a dark ground


@pytest.mark.slow
def test_under_torchrun_both_ranks_draw_and_the_site_is_the_same_bytes(tmp_path: Path) -> None:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with gloo is needed")
    argv = ["atlas", "convlens:digits_cnn", "--data", "digits", "--layers", "features.3", "classifier.2"]
    argv += ["--units", "8", "--steps", "4", "--k", "4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run(
        [*launch, "-m", "convlens.apps.cli", *argv, "--out", str(tmp_path / "two")],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("wrote ") == 1  # rank 0 alone writes and prints
    assert "drawn (rank 0)" in done.stderr
    assert "drawn (rank 1)" in done.stderr
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank computes (the digits CNN's convs round alike with any)
    try:
        assert main([*argv, "--out", str(tmp_path / "one")]) == 0
    finally:
        torch.set_num_threads(threads)
    files = {site: sorted(p.relative_to(tmp_path / site) for p in (tmp_path / site).rglob("*") if p.is_file())
             for site in ("one", "two")}  # fmt: skip
    assert files["one"] == files["two"]
    layer = (tmp_path / "one" / "layers").glob("*.html")
    assert any(page.read_text().count('<h3 id="concept-') == 6 for page in layer)  # concepts fitted
    for relative in files["one"]:
        one, two = ((tmp_path / site / relative).read_bytes() for site in ("one", "two"))
        assert one == two, relative


def site_files(root: Path) -> dict[Path, bytes]:
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_resumed_build_writes_the_same_bytes_as_a_fresh_one(tmp_path: Path) -> None:
    """A unit's picture depends on its chunk and seed, not on what the cache held or how many are shown."""
    model, data = cl.zoo.digits_cnn(), cl.zoo.digits_dataset("test")
    options: dict[str, object] = {
        "layers": ["features.3", "classifier.2"],
        "k": 2,
        "steps": 3,
        "progress": False,
    }
    build_atlas(model, data, tmp_path / "resumed", units=2, **options)  # type: ignore[arg-type]
    again = build_atlas(model, data, tmp_path / "resumed", units=5, **options)  # type: ignore[arg-type]
    assert (again.units, again.reused) == (10, 4)
    build_atlas(model, data, tmp_path / "fresh", units=5, **options)  # type: ignore[arg-type]
    resumed, fresh = site_files(tmp_path / "resumed"), site_files(tmp_path / "fresh")
    assert {p for p in fresh if p.name == "viz.png"} <= set(resumed)
    for path, content in fresh.items():
        assert resumed[path] == content, path  # the pages, pictures and numbers alike


def test_what_is_drawn_is_written_as_the_build_goes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A build stopped while drawing keeps the pictures drawn so far: a rerun draws only the rest."""
    from convlens.apps.atlas_pictures import draw_units

    model, data = cl.zoo.digits_cnn(), cl.zoo.digits_dataset("test")
    options: dict[str, object] = {"layers": ["features.0", "classifier.2"], "units": 4, "k": 2, "steps": 3}
    options |= {"progress": False, "concepts": 0}
    real, calls = draw_units, []

    def stopped(*args: object, **kwargs: object) -> object:
        calls.append(args[1])
        if len(calls) == 2:
            raise KeyboardInterrupt  # the second job: the first one's pictures are on disk already
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("convlens.apps.atlas.draw_units", stopped)
    with pytest.raises(KeyboardInterrupt):
        build_atlas(model, data, tmp_path, **options)  # type: ignore[arg-type]
    monkeypatch.setattr("convlens.apps.atlas.draw_units", real)
    kept = len(list((tmp_path / "_cache").glob("*/unit.json")))
    assert kept == 4  # the first job's four units
    again = build_atlas(model, data, tmp_path, **options)  # type: ignore[arg-type]
    assert (again.units, again.reused) == (8, 4)
