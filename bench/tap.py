"""LayerTap on every conv of resnet50 against a plain forward (DESIGN target: <= 1.05x).

Run: python bench/tap.py [--batch 4] [--repeats 15]
"""

from __future__ import annotations

import argparse

import torch
import torchvision
from common import interleaved, load_line
from torch import nn

import convlens as cl


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None).eval()
    x = torch.randn(args.batch, 3, 224, 224)
    convs = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    tap = cl.LayerTap(model, convs)
    device_tap = cl.LayerTap(model, convs, device="cpu")

    def plain() -> object:
        with torch.no_grad():
            return model(x)

    def with_block() -> object:
        with torch.no_grad(), tap:
            return model(x)

    def run() -> object:
        return tap.run(x)

    def run_device() -> object:
        return device_tap.run(x)

    medians = interleaved(
        {
            "plain forward (floor)": plain,
            "with LayerTap: model(x)": with_block,
            "tap.run(x)": run,
            "tap.run(x), device='cpu'": run_device,
        },
        repeats=args.repeats,
    )
    stored = sum(t.numel() * t.element_size() for t in tap.run(x).values())
    floor = medians["plain forward (floor)"]
    print(
        f"resnet50, batch {args.batch}, 224x224, {len(convs)} convs tapped, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; {load_line()}"
    )
    print()
    print("| method | median ms | x floor |")
    print("|---|---:|---:|")
    for name, seconds in medians.items():
        print(f"| {name} | {seconds * 1e3:.1f} | {seconds / floor:.3f} |")
    print()
    print(
        f"memory: the {len(convs)} cloned activations hold {stored / 2**20:.1f} MiB (cloning costs memory only)"
    )


if __name__ == "__main__":
    main()
