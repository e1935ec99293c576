"""
What does a CNN learn? Gradient ascent on the input
====================================================

``x* = argmax_x y^i`` finds, for each class, the input the digits CNN scores
highest; the network is easily fooled by noise. Adding the lecture's L1 term,
``x* = argmax_x (y^i - sum |x_ij|)``, forces most pixels to "no ink" and the
images start to look like digits.
"""

import argparse

import torch

import convlens as cl
from convlens import objectives as ob
from convlens import zoo
from convlens.render import plot_images

parser = argparse.ArgumentParser()
parser.add_argument("--out", help="save the figures with this prefix")
parser.add_argument("--steps", type=int, default=128)
args, _ = parser.parse_known_args()

model = zoo.digits_cnn()
figures = {}
for weight in (0.0, 100.0):
    objective = ob.class_logit(range(10)) - weight * ob.l1()
    am = cl.ActivationMaximizer(
        model, objective, input_shape=(10, 1, 28, 28), steps=args.steps, seed=0, value_range=(0.0, 1.0)
    )
    res = am.run()
    with torch.no_grad():
        says = model(res.image).argmax(1).tolist()
    titles = [f"class {i}: says {s}" for i, s in enumerate(says)]
    title = "x* = argmax y^i" + (f" - {weight:g} mean|x|" if weight else "")
    figures[weight] = plot_images(res.image, titles, cols=5, title=title)
if args.out:
    for weight, fig in figures.items():
        fig.savefig(f"{args.out}_l1_{weight:g}.png")
