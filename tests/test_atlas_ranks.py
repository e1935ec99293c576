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
from convlens.apps.atlas import NO_INK, build_atlas
from convlens.apps.atlas_draw import Job, assign, chunk_size, unit_jobs
from convlens.apps.cli import main


def test_units_are_cut_into_chunks_aligned_on_their_numbers_whatever_is_missing() -> None:
    fresh = unit_jobs("conv", range(10), size=4, seed=7, cost=1.5)
    assert [job.units for job in fresh] == [(0, 1, 2, 3), (4, 5, 6, 7), (8, 9)]
    assert [job.seed for job in fresh] == [7, 11, 15]  # the seed plus the chunk's first unit
    assert [job.cost for job in fresh] == [6.0, 6.0, 3.0]
    resumed = unit_jobs("conv", [4, 5, 6, 7, 9], size=4, seed=7, cost=1.5)  # 0-3 and 8 from the cache
    assert [(job.units, job.seed) for job in resumed] == [((4, 5, 6, 7), 11), ((9,), 15)]
    assert chunk_size(10**6) == 16
    assert chunk_size(10**9) == 4


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
