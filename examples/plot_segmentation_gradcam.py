"""
Grad-CAM for a class over a segmentation mask
=============================================

A segmenter scores every class at every pixel. To ask where it looked to
label a region, sum one class's score over that region and follow the
gradient of the sum:
``cl.GradCAM(model, "backbone.16")(x, target=SegmentationTarget(label, mask))``.
Here torchvision's ``lraspp_mobilenet_v3_large`` segments the sample photo
(resize 256, centre crop 224, ImageNet normalization); the class it labels
most of the picture with (not counting the background, when any other class
is found) is explained over its pixels in the centre square of the picture
(the mask, bright in the first panel; any region will do, pytorch-grad-cam's
tutorial takes all of the class's pixels, which for a random model is the
whole picture). Grad-CAM follows that class's score summed over the mask,
at the two backbone layers the LR-ASPP head reads: ``backbone.4`` (stride 8) and ``backbone.16`` (stride 16). The
model's output is its dict ``{"out": scores}``, which the target reads as
is. The pretrained VOC weights are used when they are in the torch hub
cache; otherwise the model has seeded random weights, and the figure says
so.
"""

import argparse
from pathlib import Path

import torch
from torchvision.models import get_model, get_model_weights

import convlens as cl
from convlens import images
from convlens.attribution.detection import SegmentationTarget
from convlens.render import plot_images

parser = argparse.ArgumentParser()
parser.add_argument("--out", help="save the figure to this file")
args, _ = parser.parse_known_args()

NAME = "lraspp_mobilenet_v3_large"
weights = get_model_weights(NAME).DEFAULT
pretrained = (Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name).is_file()
torch.manual_seed(0)
model = get_model(NAME, weights=weights if pretrained else None, weights_backbone=None).eval()
note = None if pretrained else "random weights (seed 0): pretrained weights unavailable"
classes = weights.meta["categories"]

x = images.preprocess(images.sample_image())  # (1, 3, 224, 224)
picture = images.deprocess(x)
with torch.no_grad():
    predicted = model(x)["out"].argmax(dim=1)[0]  # (224, 224) class indices
counts = torch.bincount(predicted.flatten(), minlength=len(classes))
if counts[1:].sum() > 0:
    counts[0] = 0  # a class other than the background, when the model finds one
label = int(counts.argmax())
region = torch.zeros_like(predicted, dtype=torch.bool)
region[56:168, 56:168] = True  # the centre square, a quarter of the picture
mask = (predicted == label) & region
target = SegmentationTarget(label, mask)

low = cl.GradCAM(model, "backbone.4")(x, target=target)
high = cl.GradCAM(model, "backbone.16")(x, target=target)
shown = cl.overlay(picture, mask.float(), alpha=0.4, cmap="gray")
pictures = [shown, cl.overlay(picture, low.maps[0]), cl.overlay(picture, high.maps[0])]
share = float(mask.float().mean())
titles = [f"mask: {classes[label]}, centre ({share:.0%})", "backbone.4", "backbone.16"]
fig = plot_images(
    pictures,
    titles,
    cols=3,
    title=f"Grad-CAM of {classes[label]!r} over its mask: {NAME}",
    note=note,
    panel_size=2.5,
)
if args.out:
    fig.savefig(args.out)
