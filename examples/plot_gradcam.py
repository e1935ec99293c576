"""
Grad-CAM: where does the network look?
======================================

Grad-CAM weights the channels of a convolutional layer by the gradient of
the class score and keeps the positive part. Here for the digits CNN's last
convolution on a few test digits, with the predicted class.
"""

import argparse

import torch

import convlens as cl
from convlens import zoo
from convlens.render import plot_images

parser = argparse.ArgumentParser()
parser.add_argument("--out", help="save the figure to this file")
args, _ = parser.parse_known_args()

model = zoo.digits_cnn()
data = zoo.digits_dataset("test")
x = torch.stack([data[i][0] for i in range(4)])
out = cl.GradCAM(model, "features.3")(x)
pictures = [cl.overlay(x[i], out.maps[i]) for i in range(4)]
assert out.targets is not None
titles = [f"says {int(t)} ({float(s):.1f})" for t, s in zip(out.targets, out.scores, strict=True)]
fig = plot_images(pictures, titles, cols=4, title="Grad-CAM at features.3", panel_size=2.0)
if args.out:
    fig.savefig(args.out)
