"""
AlexNet layer by layer: the convolution arithmetic
==================================================

The lecture works out each output size with
``H_out = (H_in + 2*padding - kernel) / stride + 1``. :func:`convlens.trace_shapes`
does it for every layer of any model on the meta device (no arithmetic, no
weights copied) and shows the formula with each layer's own numbers.
"""

import argparse

import torchvision

import convlens as cl

parser = argparse.ArgumentParser()
parser.add_argument("--out", help="write the table as Markdown to this file")
args, _ = parser.parse_known_args()

print(cl.conv_output_size(224, kernel_size=11, stride=4, padding=2))  # the lecture's 55

model = torchvision.models.alexnet(weights=None)
report = cl.trace_shapes(model, (1, 3, 224, 224))
print(report)
if args.out:
    with open(args.out, "w") as f:
        f.write(report.to_markdown())
