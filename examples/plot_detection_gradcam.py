"""
Grad-CAM for a detected box
===========================

Which part of the picture made a detector find one box? torchvision's
``fasterrcnn_mobilenet_v3_large_320_fpn`` is run once on the sample photo;
its best box (drawn in white) is then explained: the class score of the
predicted box that best matches it by IoU is the score whose gradient
Grad-CAM follows,
``cl.GradCAM(model, "backbone.fpn", reshape=cl.Layout(part="0"))([img], target=BoxScoreTarget(label, box))``.
The FPN returns a dict of levels, and ``Layout(part="0")`` reads its first
level (stride 32 in this small model); the third panel reads the backbone's
last stage, ``backbone.body.16``, a plain tensor. The model takes a list of
``(3, H, W)`` pictures in [0, 1], as torchvision's detectors do, and the maps
come back at the picture's size. The pretrained COCO weights are used when
they are in the torch hub cache; otherwise the model has seeded random
weights, and the figure says so. A random detector gives every class a
score of about 1/91, below the default ``box_score_thresh`` of 0.05, so it
would find no box at all: the threshold is set to 0 here so that it does.
"""

import argparse
from pathlib import Path

import torch
from matplotlib.patches import Rectangle
from torchvision.models import get_model, get_model_weights

import convlens as cl
from convlens import images
from convlens.attribution.detection import BoxScoreTarget
from convlens.render import plot_images

parser = argparse.ArgumentParser()
parser.add_argument("--out", help="save the figure to this file")
args, _ = parser.parse_known_args()

NAME = "fasterrcnn_mobilenet_v3_large_320_fpn"
weights = get_model_weights(NAME).DEFAULT
pretrained = (Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name).is_file()
torch.manual_seed(0)
model = get_model(
    NAME, weights=weights if pretrained else None, weights_backbone=None, box_score_thresh=0.0
).eval()
note = None if pretrained else "random weights (seed 0): pretrained weights unavailable"
classes = weights.meta["categories"]

# The sample photo, 512x600, scaled and cropped to 320x320: the model's own size, so that its
# transform neither resizes nor pads it.
picture = images.sample_image().resize((320, 375)).crop((0, 20, 320, 340))
rgb = images.to_rgb_array(picture)  # (320, 320, 3) uint8
img = torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255.0
with torch.no_grad():
    (found,) = model([img])
label, box, score = found["labels"][:1], found["boxes"][:1], float(found["scores"][0])
target = BoxScoreTarget(label, box)

fpn = cl.GradCAM(model, "backbone.fpn", reshape=cl.Layout(part="0"))([img], target=target)
body = cl.GradCAM(model, "backbone.body.16")([img], target=target)
pictures = [rgb, cl.overlay(img, fpn.maps[0]), cl.overlay(img, body.maps[0])]
name = classes[int(label[0])]
titles = [f"best box: {name} ({score:.2f})", "FPN level 0 (backbone.fpn)", "backbone.body.16"]
fig = plot_images(pictures, titles, cols=3, title=f"Grad-CAM of one box: {NAME}", note=note, panel_size=2.5)
x1, y1, x2, y2 = box[0].tolist()
for ax in fig.axes:
    ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="white", linewidth=1.5))
if args.out:
    fig.savefig(args.out)
