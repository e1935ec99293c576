"""Activation maximization of an AlexNet channel at 224 against a hand-written floor and Lucent.

DESIGN target: <= 1.1x the floor without transforms; >= 2.5x faster than
Lucent with the same transforms. The floor is an Adam loop over the truncated
model (``features[:11]`` for ``features.10``) with the gradient taken to the
image only. Every method runs ``--steps`` steps per call; the table quotes
interleaved medians per step.

Run: python bench/maximize.py [--steps 20] [--repeats 5] [--layer 10] [--channel 5]

Lucent (torch-lucent 0.1.8) is not a declared extra: it calls kornia APIs that
only kornia 0.4.1 has, and its declared dependencies drag in test tooling.
Install it by hand, without letting pip touch torch:

    pip install --no-deps torch-lucent==0.1.8 kornia==0.4.1 && pip install ipython decorator

(With a newer kornia, ``common.alias_kornia_for_lucent`` puts back the two
functions Lucent calls from kornia's top level.) Without it the table says why
and leaves Lucent out.

The convlens rows paired with Lucent's "standard transforms" rows use
``transforms="standard"`` (Lucid's standard transforms; ``True`` now means the
recommended MACO-style crops, which Lucent has no counterpart of).
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable

import torch
import torchvision
from common import alias_kornia_for_lucent, fix_lucent_kornia_version, interleaved, load_line
from torch import nn

from convlens.featureviz.maximize import ActivationMaximizer
from convlens.featureviz.objectives import channel

SIZE = 224


def floor_run(truncated: nn.Module, steps: int, k: int, seed: int = 0) -> torch.Tensor:
    """By hand: Adam on the pixels, loss = -mean of channel k of the truncated model's output."""
    image = (
        torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed)) * 0.01
    ).requires_grad_()
    optimizer = torch.optim.Adam([image], lr=0.05)
    for _ in range(steps):
        loss = -truncated(image)[:, k].mean()
        (image.grad,) = torch.autograd.grad(loss, [image])
        optimizer.step()
    return image.detach()


def lucent_methods(
    model: nn.Module, layer: str, k: int, steps: int
) -> tuple[dict[str, Callable[[], object]], str]:
    """Lucent's render_vis, pixel or spectrum, with or without its standard transforms; and a note."""
    alias_kornia_for_lucent()  # before lucent imports kornia's old top-level names
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from lucent.optvis import param, render
        fix_lucent_kornia_version()
    except Exception as err:  # Lucent is optional: say why it is missing
        return {}, f"Lucent not compared: `import lucent.optvis.render` failed: {type(err).__name__}: {err}"

    def run(fft: bool, transforms: list[object] | None) -> Callable[[], object]:
        def call() -> object:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                images = render.render_vis(
                    model,
                    f"{layer.replace('.', '_')}:{k}",
                    param_f=lambda: param.image(SIZE, fft=fft, decorrelate=False),
                    transforms=transforms,
                    thresholds=(steps,),
                    preprocess=False,
                    progress=False,
                    show_image=False,
                )
            _remove_lucent_leftovers(model)  # else its hooks pile up call after call
            return images

        return call

    methods = {
        "Lucent, pixel+sigmoid, no transforms": run(False, []),
        "Lucent, pixel+sigmoid, standard transforms": run(False, None),
        "Lucent, fft+sigmoid, standard transforms": run(True, None),
    }
    # What one call leaves behind on the model.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        render.render_vis(
            model,
            f"{layer.replace('.', '_')}:{k}",
            param_f=lambda: param.image(SIZE, fft=False, decorrelate=False),
            transforms=[],
            thresholds=(1,),
            preprocess=False,
            progress=False,
            show_image=False,
        )
    hooks = sum(len(m._forward_hooks) for m in model.modules())
    grads = sum(p.grad is not None for p in model.parameters())
    modules = sum(1 for _ in model.modules())
    _remove_lucent_leftovers(model)
    import lucent

    note = (
        f"Lucent {lucent.__version__}: one render_vis call leaves {hooks} forward hooks on the model "
        f"({modules} modules) and writes .grad into {grads} of its {len(list(model.parameters()))} parameters "
        "(loss.backward() into every weight); the benchmark removes both after each call. Its forward runs "
        "the whole model (no early stop). Its standard transforms (pad 12, jitter 8, scale 0.9-1.1, "
        "rotate -10..10 deg via kornia, jitter 4; its jitter translates rather than crops) feed a "
        "248-273 px image; convlens's transforms='standard' is Lucid's standard transforms as one "
        "grid_sample at 224 px: pad 12 grey, jitter 8, scale 0.90-1.10, rotate -10..10 deg, jitter 4."
    )
    return methods, note


def _remove_lucent_leftovers(model: nn.Module) -> None:
    for module in model.modules():
        module._forward_hooks.clear()
    for p in model.parameters():
        p.grad = None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--layer", type=int, default=10, help="features.<layer> of AlexNet")
    parser.add_argument("--channel", type=int, default=5)
    args = parser.parse_args()
    layer, k, steps = f"features.{args.layer}", args.channel, args.steps
    torch.manual_seed(0)
    model = torchvision.models.alexnet(weights=None).eval()
    truncated = model.features[: args.layer + 1]
    shape = (1, 3, SIZE, SIZE)

    def convlens(**options: object) -> Callable[[], object]:
        am = ActivationMaximizer(model, channel(layer, k), input_shape=shape, steps=steps, **options)  # type: ignore[arg-type]
        return am.run

    methods: dict[str, Callable[[], object]] = {
        "floor: Adam over features[:k+1], grad to the image": lambda: floor_run(truncated, steps, k),
        "convlens, pixel, no transforms": convlens(),
        "convlens, pixel+sigmoid, no transforms": convlens(value_range=(0, 1)),
        "convlens, pixel+sigmoid, standard transforms": convlens(value_range=(0, 1), transforms="standard"),
        "convlens, fft+sigmoid, standard transforms": convlens(
            value_range=(0, 1), transforms="standard", param="fft"
        ),
    }
    convlens(transforms="standard")()  # what a convlens call leaves behind
    hooks_left = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    grads_left = sum(p.grad is not None for p in model.parameters())
    lucent, note = lucent_methods(model, layer, k, steps)
    methods.update(lucent)
    medians = interleaved(methods, repeats=args.repeats)

    floor = medians["floor: Adam over features[:k+1], grad to the image"]
    pairs = {
        "convlens, pixel+sigmoid, no transforms": "Lucent, pixel+sigmoid, no transforms",
        "convlens, pixel+sigmoid, standard transforms": "Lucent, pixel+sigmoid, standard transforms",
        "convlens, fft+sigmoid, standard transforms": "Lucent, fft+sigmoid, standard transforms",
    }
    print(
        f"AlexNet (random init) {layer} channel {k}, batch 1, {SIZE}x{SIZE}, {steps} steps per call, "
        f"{args.repeats} interleaved repeats, torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"{load_line()}"
    )
    print()
    print("| method | ms/step | x floor | Lucent / convlens (same setup) |")
    print("|---|---:|---:|---:|")
    for name, seconds in medians.items():
        partner = pairs.get(name)
        versus = f"{medians[partner] / seconds:.2f}x" if partner in medians else ""
        print(f"| {name} | {seconds / steps * 1e3:.1f} | {seconds / floor:.2f} | {versus} |")
    print()
    print(
        f"convlens: one call leaves {hooks_left} hooks on the model and writes .grad into {grads_left} parameters."
    )
    print(note)


if __name__ == "__main__":
    main()
