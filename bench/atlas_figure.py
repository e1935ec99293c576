"""The figures of docs/atlas.rst: pages of pretrained EfficientNet-Lite0's atlas, drawn by 2 ranks, as Chromium shows them.

The site comes from ``bench/atlas.py --cases ranks --site DIR``: Lite0 with its ImageNet weights,
``_blocks.5``, ``_blocks.10`` and ``_fc``, 8 units each, 128 steps, over the 96 pictures the bench
generates (crops of scikit-image's photographs in 10 folders), built by 2 ``torchrun`` ranks of one thread;
``DIR/run.json`` holds that run's time and peak memory. This script opens a few of its pages in headless
Chromium (Debian's ``chromium``, driven by playwright; nothing leaves the machine: every request that is
not ``file:`` is aborted) and saves each as a JPEG, cut to ``--height`` pixels.

Run::

    python bench/atlas.py --cases ranks --site bench/out/atlas_lite0
    python bench/atlas_figure.py --site bench/out/atlas_lite0 --out docs/_static
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
from pathlib import Path

from PIL import Image

#: The pages shown: a layer page with its concepts, a unit page with its circuits, an output unit's page.
PAGES = {
    "atlas_lite0_layer.jpg": "layers/_blocks.10.html",
    "atlas_lite0_unit.jpg": "units/_blocks.10/3.html",
    "atlas_lite0_class.jpg": "units/_fc/1.html",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("docs/_static"))
    parser.add_argument("--width", type=int, default=1000)
    parser.add_argument("--height", type=int, default=1500)
    args = parser.parse_args()
    from playwright.sync_api import Route, sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("needs Debian's chromium on PATH: apt-get install -y chromium")
    run = json.loads((args.site / "run.json").read_text())
    two = run["two"]
    print(
        f"site: {two['units']} units of {', '.join(two['layers'])} over {two['images']} pictures, "
        f"drawn by 2 ranks in {two['seconds']:.0f} s, peak RSS per rank "
        + " / ".join(f"{p:.0f}" for p in two["peaks_mib"])
        + f" MiB (1 process: {run['one']['seconds']:.0f} s, {run['one']['peak_mib']:.0f} MiB)"
    )
    args.out.mkdir(parents=True, exist_ok=True)

    def local_only(route: Route) -> None:
        if route.request.url.startswith(("file:", "data:")):
            route.continue_()
        else:
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": args.width, "height": 800})
        page.route("**/*", local_only)
        for name, relative in PAGES.items():
            page.goto((args.site / relative).resolve().as_uri())
            page.wait_for_load_state("load")
            shot = Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB")
            shot = shot.crop((0, 0, shot.width, min(shot.height, args.height)))
            shot.save(args.out / name, quality=85, optimize=True)
            print(f"wrote {args.out / name} ({shot.width} x {shot.height}) from {relative}")
        browser.close()


if __name__ == "__main__":
    main()
