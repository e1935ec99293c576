"""
AlexNet's filters and feature maps, layer by layer
==================================================

The lecture's walk through AlexNet's ``features``: the filters of the first
convolution (11x11, their 3 channels drawn as red, green and blue), and the
first 8 feature maps a photo makes, preprocessed as the lecture does (resize
224, centre crop 224, mean = std = 0.5), after conv1 (55x55), the first max
pooling (27x27), conv2 (27x27), the second max pooling (13x13), conv3
(13x13) and ``features.8``: what the lecture's ``features[7:9]`` computes,
ReLU then conv4, not a max pooling. This page uses random weights, and its
figures say so; ``--weights auto`` takes the pretrained ones when they are in
the torch hub cache (or can be downloaded).
"""

import argparse

import convlens as cl
from convlens import images, zoo

parser = argparse.ArgumentParser()
parser.add_argument("--out", help="save the figures with this prefix")
parser.add_argument("--weights", default="random", help="random (default), auto or imagenet")
args, _ = parser.parse_known_args()

model = zoo.load("torchvision:alexnet", weights=args.weights)
note = zoo.weights_note(model) or ("random weights (seed 0)" if args.weights == "random" else None)
filters = cl.FilterRenderer(model, "features.0", note=note).plot(n=32, cols=8)

x = images.preprocess(images.sample_image(), preset="lecture")
layers = ["features.0", "features.2", "features.3", "features.5", "features.6", "features.8"]
acts = cl.LayerTap(model, layers).run(x)  # the forward stops after features.8
maps = {}
for layer in layers:
    title = f"{layer} ({type(model.get_submodule(layer)).__name__}): {list(acts[layer].shape)}"
    maps[layer] = cl.plot_feature_maps(acts[layer][0], n=8, cols=8, title=title, note=note)
if args.out:
    filters.savefig(f"{args.out}_filters.png")
    for layer, fig in maps.items():
        fig.savefig(f"{args.out}_{layer}.png")
