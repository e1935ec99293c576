"""
Filters and feature maps
========================

The first convolution's filters of the digits CNN, and the feature maps a
handwritten digit makes at its first two convolutions (the lecture shows the
same for AlexNet and a photo).
"""

import argparse

import convlens as cl
from convlens import zoo

parser = argparse.ArgumentParser()
parser.add_argument("--out", help="save the figures with this prefix")
args, _ = parser.parse_known_args()

model = zoo.digits_cnn()
filters = cl.FilterRenderer(model, "features.0").plot(n=8, cols=8)

digit, label = zoo.digits_dataset("test")[0]
acts = cl.LayerTap(model, ["features.0", "features.3"]).run(digit[None])
first = cl.plot_feature_maps(acts["features.0"][0], n=8, cols=8, title=f"digit {int(label)}: features.0")
second = cl.plot_feature_maps(acts["features.3"][0], n=16, cols=8, title=f"digit {int(label)}: features.3")
if args.out:
    for name, fig in (("filters", filters), ("maps0", first), ("maps3", second)):
        fig.savefig(f"{args.out}_{name}.png")
