"""Models as people really have them: detectors, compiled, scripted, wrapped, structured outputs, meta.

docs/architecture.md, invariant 2 ("any nn.Module") and the second-round contract: the meta probe must leave no trace
on a model (a detector caches anchors on itself), a wrapper is seen through, a model hooks cannot see is
refused by name, a flat Grad-CAM map is all zeros, token outputs are reshaped on request, a user's own
value-reading hook changes nothing, and a tapped activation is the value the layer returned however the
tensor is rewritten afterwards.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import convlens as cl
from wild import BatchedDetector, FeatureNet, ResidualNet, TinyViT, Wrapped, jit, seeded_bn, small_cnn


def _image(*shape: int, seed: int = 1) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _assert_same(got: dict[str, Tensor], expected: dict[str, Tensor]) -> None:
    assert expected, "nothing to compare: the reference recorded nothing"
    assert list(got) == list(expected)
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, rtol=0, atol=0, msg=f"{name} differs")


def _real_forwards(module: nn.Module) -> tuple[list[int], Callable[[], None]]:
    """Count the calls of ``module`` whose output is a real (non-meta) tensor; returns (counter, remove)."""
    counter = [0]

    def count(_module: nn.Module, _args: tuple[Any, ...], output: Any) -> None:
        if isinstance(output, Tensor) and not output.is_meta:
            counter[0] += 1

    return counter, module.register_forward_hook(count).remove


# -- 1. a detector keeps the state its forward caches on itself --------------------------------


def _detector() -> nn.Module:
    detection = pytest.importorskip("torchvision").models.detection
    torch.manual_seed(0)
    # min_size/max_size keep the (unchanged) architecture cheap: the transform resizes to 128.
    model: nn.Module = detection.fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None, min_size=128, max_size=128
    ).eval()
    return model


def _tensors_in(value: Any, where: str) -> Iterator[tuple[str, Tensor]]:
    if isinstance(value, Tensor):
        yield where, value
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _tensors_in(item, f"{where}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _tensors_in(item, f"{where}[{key!r}]")


def _meta_state(model: nn.Module) -> list[str]:
    """Every tensor a module holds (parameters, buffers and plain attributes such as cached anchors) on meta."""
    found = []
    for name, module in model.named_modules():
        for attr, value in vars(module).items():
            if attr != "_modules":
                found += [where for where, t in _tensors_in(value, f"{name}.{attr}") if t.is_meta]
    return found


def _assert_detector_intact(model: nn.Module, image: Tensor) -> None:
    anchors = model.get_submodule("rpn.anchor_generator").cell_anchors
    assert anchors, "the anchor generator holds no anchors: nothing was checked"
    assert _meta_state(model) == [], "the meta probe left meta tensors on the model"
    detections = model([image])
    assert isinstance(detections, list)
    assert {"boxes", "labels", "scores"} <= set(detections[0])


def test_a_detector_tapped_on_its_list_of_images_keeps_its_cached_anchors_real() -> None:
    model = _detector()
    image = torch.rand(3, 128, 128, generator=torch.Generator().manual_seed(0))
    assert "backbone.body.0" in [layer.name for layer in cl.list_layers(model)]
    transform: Any = model.transform
    with torch.no_grad():
        images, _ = transform([image])
        expected = model.get_submodule("backbone.body.0")(images.tensors)
    acts = cl.LayerTap(model, ["backbone.body.0"]).run([image])  # forward(images: list[Tensor])
    _assert_same(acts, {"backbone.body.0": expected})
    _assert_detector_intact(model, image)


def test_tracing_or_explaining_a_detector_keeps_its_cached_anchors_real() -> None:
    # trace_shapes and the CAM family take a batch tensor, so the detector is wrapped as one (GradCAM
    # cannot take a detector's list of images itself); its score is the sum of its detection scores.
    model = _detector()
    image = torch.rand(3, 128, 128, generator=torch.Generator().manual_seed(0))
    wrapped = BatchedDetector(model)
    report = cl.trace_shapes(wrapped, (1, 3, 128, 128))
    assert "det.backbone.body.0.0" in report
    assert report["det.backbone.body.0.0"].output_shape == (1, 16, 64, 64)
    _assert_detector_intact(model, image)

    def score(out: list[dict[str, Tensor]]) -> Tensor:
        return torch.stack([o["scores"].sum() for o in out])

    # Random weights may detect nothing, so the score need not depend on the layer: a convlens error
    # saying so is a fine answer; corrupting the model is not.
    with contextlib.suppress(cl.ConvlensError):
        cl.GradCAM(wrapped, "det.backbone.body.0")(image[None], target=score)
    _assert_detector_intact(model, image)


# -- 2. torch.compile ----------------------------------------------------------------------------


def test_a_compiled_model_is_tapped_and_explained_by_its_eager_layer_names() -> None:
    model = small_cnn().eval()
    x = _image(2, 3, 8, 8)
    try:
        compiled: Any = torch.compile(model, backend="eager")  # the eager backend needs no C compiler
        compiled(x)
    except RuntimeError as err:  # e.g. a Python version dynamo does not support
        pytest.skip(f"torch.compile cannot run here: {err}")
    assert isinstance(compiled, nn.Module)

    _assert_same(cl.LayerTap(compiled, ["0", "2"]).run(x), cl.LayerTap(model, ["0", "2"]).run(x))

    eager, tap = cl.LayerTap(model, ["0"], grads=True), cl.LayerTap(compiled, ["0"], grads=True)
    eager.run(x)
    tap.run(x)
    assert eager.gradients["0"].abs().sum() > 0
    _assert_same(tap.gradients, eager.gradients)

    torch.testing.assert_close(cl.GradCAM(compiled, "2")(x).maps, cl.GradCAM(model, "2")(x).maps)


# -- 3. TorchScript ------------------------------------------------------------------------------


def _unsupported_model_error() -> type[Exception]:
    error = getattr(cl, "UnsupportedModelError", None)
    if error is None:
        pytest.fail(
            "convlens has no UnsupportedModelError (a ConvlensError and TypeError for models whose "
            "modules hooks cannot see, such as TorchScript)"
        )
    assert isinstance(error, type)
    assert issubclass(error, cl.ConvlensError)
    assert issubclass(error, TypeError)
    return error


@pytest.mark.parametrize("how", ["script", "trace"])
def test_a_torchscript_model_is_refused_where_hooks_are_needed_and_explained_where_not(how: str) -> None:
    model = small_cnn().eval()
    x = _image(2, 3, 8, 8)
    jitted = jit(how, model, x)
    error = _unsupported_model_error()
    with pytest.raises(error, match=r"TorchScript"):
        cl.GuidedBackprop(jitted)(x)  # guidance would be silently ignored: plain gradients
    with pytest.raises(error, match=r"TorchScript"):
        cl.LayerTap(jitted, ["0"]).run(x)  # a traced module would record nothing at all
    with pytest.raises(error, match=r"TorchScript"):
        cl.trace_shapes(jitted, tuple(x.shape))
    torch.testing.assert_close(cl.Saliency(jitted)(x).gradients, cl.Saliency(model)(x).gradients)


# -- 4. nn.DataParallel --------------------------------------------------------------------------


def test_a_data_parallel_model_is_tapped_by_inner_or_outer_names_and_stops_early() -> None:
    if torch.cuda.is_available():
        pytest.skip("this case is DataParallel without GPUs, where it calls its module directly")
    torch.manual_seed(0)
    model = FeatureNet().eval()
    parallel = nn.DataParallel(model)
    x = _image(2, 3, 8, 8)
    with torch.no_grad():
        expected = model.features[0](x)
    model.guard.armed = True  # anything after features.0 that runs for real raises
    for name in ("features.0", "module.features.0"):
        acts = cl.LayerTap(parallel, [name]).run(x)
        assert len(acts) == 1, acts.keys()
        (got,) = acts.values()
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert model.guard.calls == 0
    model.guard.armed = False
    with pytest.raises(cl.ShapeError, match=r"features\.0 expects 3 input channels, got 1"):
        cl.LayerTap(parallel, ["features.2"]).run(_image(2, 1, 8, 8))


# -- 5. structured outputs -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["dataclass", "namedtuple"])
def test_a_structured_output_is_differentiated_and_traced_like_its_logits(kind: str) -> None:
    x = _image(2, 3, 8, 8)
    plain, structured = Wrapped("plain").eval(), Wrapped(kind).eval()  # the same seeded weights
    reference = cl.LayerTap(plain, ["net.0"], grads=True)
    reference.run(x)
    tap = cl.LayerTap(structured, ["net.0"], grads=True)
    tap.run(x)
    assert reference.gradients["net.0"].abs().sum() > 0
    _assert_same(tap.gradients, reference.gradients)
    assert cl.trace_shapes(structured, tuple(x.shape)).output_shape == (2, 5)


def test_an_output_without_any_tensor_is_refused_when_gradients_are_asked_for() -> None:
    model = Wrapped("none").eval()
    with pytest.raises(cl.ConvlensError, match=r"tensor"):
        cl.LayerTap(model, ["net.0"], grads=True).run(_image(2, 3, 8, 8))


# -- 6. a flat Grad-CAM map ----------------------------------------------------------------------


def test_a_grad_cam_map_of_one_position_is_flat_and_so_all_zeros() -> None:
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    out = cl.GradCAM(model, "layer4")(_image(1, 3, 32, 32))  # layer4 is 1x1 at this size
    assert out.raw.shape == (1, 1, 1)
    assert out.maps.shape == (1, 32, 32)
    assert torch.equal(out.maps, torch.zeros(1, 32, 32)), f"max {float(out.maps.max())}"


# -- 7. a model on the meta device ---------------------------------------------------------------


def test_a_meta_model_is_tapped_on_a_meta_input() -> None:
    model = small_cnn().to("meta")
    acts = cl.LayerTap(model, ["0", "2"]).run(torch.empty(2, 3, 8, 8, device="meta"))
    assert {name: tuple(a.shape) for name, a in acts.items()} == {"0": (2, 6, 8, 8), "2": (2, 8, 8, 8)}
    assert all(a.is_meta for a in acts.values())


# -- 8. token outputs at a CAM layer ---------------------------------------------------------------


def _tokens_to_grid(t: Tensor) -> Tensor:
    """(N, L, C) tokens of a 2x2 patch grid as an (N, C, 2, 2) map."""
    return t.transpose(1, 2).reshape(t.shape[0], 8, 2, 2)


def _hand_gradcam(model: TinyViT, x: Tensor, target: int) -> Tensor:
    tokens = model.patch(x).flatten(2).transpose(1, 2)
    block = model.block(tokens)
    logits = model.head(torch.tanh(block).mean(dim=1))
    (gradient,) = torch.autograd.grad(logits[:, target].sum(), block)
    a, g = _tokens_to_grid(block.detach()), _tokens_to_grid(gradient)
    raw = F.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1))
    up = F.interpolate(raw[:, None], size=x.shape[2:], mode="bilinear", align_corners=False)[:, 0]
    low = up.amin(dim=(1, 2), keepdim=True)
    high = up.amax(dim=(1, 2), keepdim=True)
    assert bool((high > low).all()), "a flat hand-computed map: pick another seed"
    return (up - low) / (high - low)


def test_token_outputs_need_a_reshape_and_explain_like_a_grid_with_one() -> None:
    torch.manual_seed(0)
    model = TinyViT().eval()
    x = _image(2, 3, 8, 8)
    gradcam: Any = cl.GradCAM  # reshape= is not in its signature yet
    real, remove = _real_forwards(model.patch)
    try:
        with pytest.raises(cl.InvalidArgumentError, match=r"reshape="):
            gradcam(model, "block")(x)
    finally:
        remove()
    assert real[0] == 0, "the token layer was found out only after a real forward"
    out = gradcam(model, "block", reshape=_tokens_to_grid)(x, target=2)
    assert out.maps.shape == (2, 8, 8)
    assert float(out.maps.min()) >= 0.0
    assert float(out.maps.max()) <= 1.0
    torch.testing.assert_close(out.maps, _hand_gradcam(model, x, 2), rtol=1e-5, atol=1e-5)


# -- 9. a user's own hook that reads values ------------------------------------------------------


def _results(model: nn.Module, x: Tensor) -> dict[str, Any]:
    report = cl.trace_shapes(model, tuple(x.shape))
    maximized = cl.ActivationMaximizer(
        model, cl.objectives.channel("2", 0), input_shape=(1, 3, 8, 8), steps=2, seed=0
    ).run()
    return {
        "tap": cl.LayerTap(model, ["0", "2"]).run(x),
        "gradcam": cl.GradCAM(model, "2")(x).maps,
        "shapes": [(r.name, r.type, r.input_shape, r.output_shape) for r in report],
        "image": maximized.image,
        "history": maximized.history,
    }


def test_a_users_hook_that_reads_values_changes_no_result() -> None:
    model = small_cnn().eval()
    x = _image(2, 3, 8, 8)
    expected = _results(model, x)
    seen: list[float] = []
    handle = model[0].register_forward_hook(lambda _m, _args, out: seen.append(out.sum().item()))
    try:
        got = _results(model, x)
    finally:
        handle.remove()
    assert seen, "the user's hook never ran"
    _assert_same(got["tap"], expected["tap"])
    assert got["shapes"] == expected["shapes"]
    for key in ("gradcam", "image", "history"):
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0, msg=key)


# -- 10. in-place ops after a tapped layer ----------------------------------------------------------


def test_alexnets_in_place_relus_leave_its_tapped_activations_as_without_them() -> None:
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.alexnet(weights=None).eval()
    copied = copy.deepcopy(model)
    for module in copied.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
    layers = ["features.0", "features.3", "features.6", "features.8", "features.10"]
    x = _image(1, 3, 64, 64)
    _assert_same(cl.LayerTap(model, layers).run(x), cl.LayerTap(copied, layers).run(x))


def test_a_residual_sum_after_a_tapped_layer_leaves_its_activation_as_returned() -> None:
    torch.manual_seed(0)
    model = seeded_bn(ResidualNet()).eval()
    x = _image(2, 3, 6, 6)
    block = model.block
    with torch.no_grad():
        expected = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(model.stem(x))))))
    with cl.LayerTap(model, ["block.bn2"]) as tap:  # the user's own forward: `out += identity` runs
        model(x)
    torch.testing.assert_close(tap["block.bn2"], expected, rtol=0, atol=0)
    for grads in (False, True):  # "head" runs after the +=, so run() cannot stop before it
        acts = cl.LayerTap(model, ["block.bn2", "head"], grads=grads).run(x)
        torch.testing.assert_close(acts["block.bn2"], expected, rtol=0, atol=0, msg=f"grads={grads}")
