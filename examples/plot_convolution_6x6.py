"""
The 6x6 image and two 3x3 filters
=================================

The convolution the lecture works by hand ("use Excel to verify!"): a 6x6
black-and-white image, filter 1 (a diagonal) and filter 2 (a vertical line),
at stride 1 (4x4 feature maps) and stride 2 (2x2), then 2x2 max pooling of
the stride-1 maps. Filter 1 finds its diagonal at the top left and bottom
left, the two 3s of its map.
"""

import argparse

import torch
from torch import nn

import convlens as cl

parser = argparse.ArgumentParser()
parser.add_argument("--out", help="save the figure to this file")
args, _ = parser.parse_known_args()

image = torch.tensor(
    [[1, 0, 0, 0, 0, 1], [0, 1, 0, 0, 1, 0], [0, 0, 1, 1, 0, 0],
     [1, 0, 0, 0, 1, 0], [0, 1, 0, 0, 1, 0], [0, 0, 1, 0, 1, 0]],
    dtype=torch.float32,
)  # fmt: skip
filters = torch.tensor(
    [[[[1, -1, -1], [-1, 1, -1], [-1, -1, 1]]], [[[-1, 1, -1], [-1, 1, -1], [-1, 1, -1]]]],
    dtype=torch.float32,
)


def grid(t: torch.Tensor) -> str:
    return "\n".join(" ".join(f"{int(v):3d}" for v in row) for row in t.tolist())


acts = {}
for stride in (1, 2):
    size = cl.conv_output_size(6, kernel_size=3, stride=stride)  # (6 - 3) / stride + 1
    print(f"stride {stride}: {size} x {size} feature maps")
    net = nn.Sequential(nn.Conv2d(1, 2, 3, stride=stride, bias=False), nn.MaxPool2d(2))
    with torch.no_grad():
        net[0].weight.copy_(filters)
    acts[stride] = cl.LayerTap(net, ["0", "1"]).run(image[None, None])
    for k in range(2):
        print(f"filter {k + 1}, stride {stride}:\n{grid(acts[stride]['0'][0, k])}")
for k in range(2):
    print(f"filter {k + 1}, stride 1, then 2x2 max pooling:\n{grid(acts[1]['1'][0, k])}")

fig = cl.plot_feature_maps(acts[1]["0"][0], n=2, cols=2, title="stride 1: two 4x4 feature maps")
if args.out:
    fig.savefig(args.out)
