"""Write the lecture's three notebooks, ``notebooks/*.ipynb``, from the cells below.

The lecture runs "7.1. CNN.ipynb", "7.2. What does CNN learn.ipynb" and
"7.3 GradCAM.ipynb". ``docs/notebooks.rst`` maps every code cell its slides show,
in the lecture's order, to the convlens calls that replace it. The notebooks
written here follow that page cell by cell: for each lecture cell a markdown
cell (its label, what it did with its code quoted briefly, what differs) and
then a code cell with the convlens calls that do its job.

The cells are Python data in this file, so the notebooks are reproducible and a
change to them is a reviewable diff here. They are written without outputs or
execution counts: outputs would make every diff large (base64 pictures), would go
stale as the library changes, and depend on whether the pretrained weights were
at hand. ``scripts/run_notebooks.py`` executes them (CI does, and the docs show
those executed copies). ``tests/test_notebooks.py`` checks that the committed
notebooks are what this script writes.

Usage::

    python scripts/make_notebooks.py          # (re)write notebooks/
    python scripts/make_notebooks.py --check  # exit 1, naming them, if any differ
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path
from typing import Literal

import nbformat

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = ROOT / "notebooks"

CellKind = Literal["markdown", "code"]
Cell = tuple[CellKind, str]


def md(*parts: str) -> Cell:
    """A markdown cell: the parts, each dedented and stripped, as paragraphs."""
    return ("markdown", "\n\n".join(textwrap.dedent(part).strip("\n") for part in parts))


def code(text: str) -> Cell:
    """A code cell (the text is dedented and stripped)."""
    return ("code", textwrap.dedent(text).strip("\n"))


NOTE_ON_FIGURES = """
    convlens never calls pyplot: its drawing functions return a matplotlib
    `Figure`, which the notebook shows when it is a cell's last value
    (`%matplotlib inline` in the first cell sets that up; a script saves it with
    `fig.savefig("name.png")` instead). There is no `plt.show()`.
"""

NOTE_ON_WEIGHTS = """
    It runs offline on a CPU in well under a minute. The pretrained ImageNet
    weights (of AlexNet; in 7.3 of VGG16 and ResNet18 too) come from the torch hub
    cache, or are downloaded when online; without them
    `zoo.load(..., weights="auto")` warns (a `RandomWeightsWarning`) and uses
    seeded random weights. The shapes and the arithmetic are then the lecture's,
    but the pictures are not, and every figure they affect says so in red.
"""

CNN: list[Cell] = [
    md(
        """
        # 7.1. CNN, with convlens

        The lecture's notebook "7.1. CNN.ipynb" opens AlexNet one layer at a time:
        it loads the model, turns a picture into its input, runs the first
        convolution by hand, draws its output, and goes on layer by layer to the
        flattened 9216 features. This notebook follows it cell by cell: for each of
        the lecture's cells (with its label, `In [2]`, ..., as the slides print it),
        what it did, its code quoted briefly, what differs, and then the convlens
        calls that do its job. The docs page "From the lecture's notebooks to
        convlens" (`docs/notebooks.rst`) has the whole cells side by side.
        """,
        NOTE_ON_WEIGHTS,
        NOTE_ON_FIGURES,
    ),
    code(
        """
        %matplotlib inline
        import torch
        from torch import nn

        import convlens as cl
        from convlens import images, zoo
        from convlens.render import plot_images
        """
    ),
    md(
        """
        ## `In [2]`: load a pretrained AlexNet

        From the lecture's cell:

        ```python
        import torchvision
        model = torchvision.models.alexnet(pretrained=True)
        ```

        **What differs:** `pretrained=True` is gone from current torchvision
        (`weights=AlexNet_Weights.DEFAULT`). `weights="auto"` takes the pretrained
        weights when it can and otherwise falls back to seeded random weights,
        loudly; `weights="imagenet"` fails instead. Other models:
        `"torchvision:vgg16"`, `"torchvision:resnet18"`, any torchvision classifier.
        """
    ),
    code(
        """
        model = zoo.load("torchvision:alexnet", weights="auto")
        note = zoo.weights_note(model)  # None with the pretrained weights, else on every figure
        note or "pretrained ImageNet weights"
        """
    ),
    md(
        """
        ## `In [3]`: evaluation mode, on the GPU

        From the lecture's cell:

        ```python
        model.eval()
        model.to(device)
        ```

        **What differs:** `zoo.load` returns the model in eval mode, and every
        convlens call runs the model in eval mode and restores its flags afterwards.
        `device` is never defined in the cells the slides show; convlens runs on
        whatever device the model and its input are on (`model.to(device)` as
        before, if you have a GPU).
        """
    ),
    code(
        """
        model.training
        """
    ),
    md(
        """
        ## The printed architecture (an output the slides show, not a cell)

        ```text
        AlexNet((features): Sequential((0): Conv2d(3, 64, kernel_size=(11, 11), stride=(4, 4), padding=0, ...
        ```

        **What differs:** most slides print conv1 with `padding=0`, an old
        torchvision printout; today's has `padding=(2, 2)`, which the 55 of cell 12
        needs. convlens names layers as `named_modules()` does: `model.features[0]`
        is `"features.0"` (`convlens layers torchvision:alexnet` on the command line).
        """
    ),
    code(
        """
        print(model)
        cl.list_layers(model)  # every named layer, its type and parameters: a table in a notebook
        """
    ),
    md(
        """
        ## `In [6]`: read the picture with OpenCV

        From the lecture's cell:

        ```python
        import cv2
        image = cv2.imread(fname)
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        plt.imshow(image)
        ```

        **What differs:** no OpenCV and no BGR-to-RGB step: `images.load_image`
        reads a path, a PIL image, an array or a tensor as RGB. `fname` is not
        defined on the slides; convlens's default picture is matplotlib's photo of
        Grace Hopper, which works offline.
        """
    ),
    code(
        """
        fname = images.sample_image_path()  # or the path of your own picture
        picture = images.load_image(fname)  # an RGB PIL image
        plot_images([picture], cols=1, panel_size=4.0)
        """
    ),
    md(
        """
        ## `In [7]`: the preprocessing

        From the lecture's cell:

        ```python
        from torchvision import transforms
        transformer = transforms.Compose([
            transforms.Resize(224),
            transforms.Normalize(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5]))
        ```

        **What differs:** the cell as printed is a `SyntaxError` (`Compose([` is
        closed by `)`). Its mean = std = 0.5 is not what AlexNet's weights were
        trained with: `preset="imagenet"` (the default) is torchvision's own
        transform; `preset="lecture"` reproduces the slides.
        """
    ),
    code(
        """
        images.PRESETS["lecture"]
        """
    ),
    md(
        """
        ## `In [8]`: apply it

        From the lecture's cell:

        ```python
        PILImg= Image.fromarray(image.astype('uint8')).convert('RGB')
        PILImg = transformer(PILImg)
        PILImg.shape
        ```

        **What differs:** one call from the picture to the model input, and the
        batch of one is already there (the slide prints `torch.Size([3, 224, 224])`).
        `images.deprocess` turns it back into a picture.
        """
    ),
    code(
        """
        x = images.preprocess(picture, preset="lecture")
        x.shape
        """
    ),
    md(
        """
        ## `In [9]`: add the batch dimension

        From the lecture's cell:

        ```python
        imageTensor = torch.unsqueeze(PILImg, 0)
        imageTensor.shape
        ```

        **What differs:** nothing left to do. A picture without its batch dimension
        gets a `ShapeError` that says `x.unsqueeze(0)`, from every convlens call,
        before any work.
        """
    ),
    code(
        """
        try:
            cl.LayerTap(model, ["features.0"]).run(x[0])  # the picture without its batch dimension
        except cl.ShapeError as err:
            print(err)
        x.shape  # preprocess returned the batch of one
        """
    ),
    md(
        """
        ## `In [9]` (a second cell 9, from the earlier MLP practice): the MLP's input

        From the lecture's cell:

        ```python
        tensorX = torch.FloatTensor(trainX).to(device)
        print(tensorX.shape, tensorY_hat.shape)
        ```

        **What differs:** no counterpart: convlens looks inside trained networks, it
        does not build training data. The slide shows the cell only to contrast an
        MLP's `(128, 2)` input with the CNN's; `trainX` is not defined here.
        """
    ),
    code(
        """
        # The CNN's input: a batch of one RGB picture, where the MLP's was 128 points of 2 numbers.
        tuple(x.shape)
        """
    ),
    md(
        """
        ## `In [10]`: the first convolution

        From the lecture's cell:

        ```python
        conv1 = model.features[0]
        print(conv1)
        ```

        **What differs:** the same module, by its `named_modules()` name; a
        mistyped name gets a `LayerNotFoundError` that names the nearest layers.
        """
    ),
    code(
        """
        try:
            cl.resolve_layer(model, "feature.0")
        except cl.LayerNotFoundError as err:
            print(err.args[0])
        conv1 = cl.resolve_layer(model, "features.0").module
        conv1
        """
    ),
    md(
        """
        ## `In [11]`: its weights

        From the lecture's cell:

        ```python
        weight1 = conv1.weight.data.cpu().numpy()
        print(weight1.shape)
        ```

        **What differs:** `FilterRenderer` gives the weights ready to draw, channels
        last; the raw array is still `conv1.weight.detach().cpu().numpy()`.
        """
    ),
    code(
        """
        renderer = cl.FilterRenderer(model, "features.0", note=note)
        print(renderer.describe())
        print(tuple(conv1.weight.shape))  # the raw weights: 64 filters, depth 3, 11 by 11
        renderer.images().shape  # every filter as an RGB picture
        """
    ),
    md(
        """
        ## `In [12]`: conv1's output and its size

        From the lecture's cell:

        ```python
        conv1_out = conv1(imageTensor.to(device))
        conv1_out.shape
        ```

        **What differs:** `LayerTap` runs the model's own forward (no autograd,
        stopping after the last tapped layer) instead of calling layers by hand. The
        slide's `(224 + 2 x 2 - 11) / 4 + 1 = 55.25` leaves out the floor in
        PyTorch's formula; `trace_shapes` shows every layer's formula with its own
        numbers, on the meta device (no arithmetic, no picture).
        """
    ),
    code(
        """
        acts = cl.LayerTap(model, ["features.0"]).run(x)  # stops after features.0
        print(acts["features.0"].shape)
        report = cl.trace_shapes(model, (1, 3, 224, 224))
        report["features.0"].formula
        """
    ),
    md(
        """
        ## The slides' 6x6 example (no cell: "Use Excel to verify!")

        Two 3x3 filters over a 6x6 image, stride 1, then 2x2 max pooling.

        **What differs:** the first slide's 6x6 image is garbled in the lecture's
        text (7 columns, a -1); this is the image of the later slides.
        """
    ),
    code(
        """
        conv = nn.Conv2d(1, 2, 3, stride=1, bias=False)
        with torch.no_grad():
            conv.weight.copy_(
                torch.tensor(
                    [[[[1, -1, -1], [-1, 1, -1], [-1, -1, 1]]], [[[-1, 1, -1], [-1, 1, -1], [-1, 1, -1]]]],
                    dtype=torch.float32,
                )
            )
        six = torch.tensor(
            [
                [1, 0, 0, 0, 0, 1],
                [0, 1, 0, 0, 1, 0],
                [0, 0, 1, 1, 0, 0],
                [1, 0, 0, 0, 1, 0],
                [0, 1, 0, 0, 1, 0],
                [0, 0, 1, 0, 1, 0],
            ],
            dtype=torch.float32,
        )
        net = nn.Sequential(conv, nn.MaxPool2d(2))
        small = cl.LayerTap(net, ["0", "1"]).run(six[None, None])
        print(small["0"][0, 0])  # filter 1, stride 1: [[3, -1, -3, -1], [-3, 1, 0, -3], ...]
        small["1"][0, 0]  # after 2x2 max pooling: [[3, 0], [3, 1]]
        """
    ),
    md(
        """
        ## `[13]`: draw the first 32 of conv1's 64 feature maps

        From the lecture's cell:

        ```python
        imgArray=conv1_out[0].data.cpu().numpy()
        fig=plt.figure(figsize=(18, 9))
        for i in range(32):
            plt.imshow(imgArray[i], cmap='gray')
        ```

        **What differs:** one call; each panel is scaled on its own, as `plt.imshow`
        does, and titled with its channel.
        """
    ),
    code(
        """
        cl.plot_feature_maps(acts["features.0"][0], n=32, cols=8, note=note)
        """
    ),
    md(
        """
        ## `[14]`: ReLU and max pooling, `features[1:3]`

        From the lecture's cell:

        ```python
        conv1_pooling = model.features[1:3]
        conv1_out1 = conv1_pooling(conv1_out)
        print(conv1_out1.shape)
        ```

        **What differs:** `features[1]` is `ReLU(inplace=True)`: the cell overwrites
        `conv1_out` with its rectified values, so running cell 13 again draws other
        maps, and cell 15 reads the rewritten tensor. `LayerTap` records each
        layer's output as the layer returned it: the one that a later in-place op
        rewrites is copied, and `tap.copied` names it. The slide's
        `(55 + 2 x 2 - 3) / 2 + 1` has padding 2 where the pooling has 0:
        `floor((55 - 3) / 2) + 1 = 27`.
        """
    ),
    code(
        """
        tap = cl.LayerTap(model, ["features.0", "features.2"])
        acts = tap.run(x)
        print(acts["features.2"].shape)
        print((acts["features.0"] < 0).any())  # conv1's output as it returned it, before the ReLU
        print(tap.copied)
        cl.plot_feature_maps(acts["features.2"][0], n=32, cols=8, note=note)
        """
    ),
    md(
        """
        ## `[15]`: the second convolution

        From the lecture's cell:

        ```python
        conv2 = model.features[3]
        conv2_out = conv2(conv1_out)
        print(conv2_out.shape)
        ```

        **What differs:** the cell feeds conv2 `conv1_out`, conv1's 55x55 output
        before the pooling, not the pooled `conv1_out1`: as written it gives
        `[1, 192, 55, 55]`, not the `[1, 192, 27, 27]` the slide prints. The model's
        forward feeds conv2 the pooled maps, and `LayerTap` follows the forward.
        """
    ),
    code(
        """
        acts = cl.LayerTap(model, ["features.3"]).run(x)
        print(acts["features.3"].shape)
        print(report["features.3"].formula)
        cl.plot_feature_maps(acts["features.3"][0], n=32, cols=8, note=note)
        """
    ),
    md(
        """
        ## `[16]`: ReLU and max pooling after conv2, `features[4:6]`

        From the lecture's cell:

        ```python
        conv2_pooling = model.features[4:6]
        conv2_out1 = conv2_pooling(conv2_out)
        print(conv2_out1.shape)
        ```

        **What differs:** the in-place ReLU `features[4]` rewrites `conv2_out`, as in
        cell 14.
        """
    ),
    code(
        """
        acts = cl.LayerTap(model, ["features.5"]).run(x)
        print(acts["features.5"].shape)
        cl.plot_feature_maps(acts["features.5"][0], n=32, cols=8, note=note)
        """
    ),
    md(
        """
        ## `[17]`: the third convolution

        From the lecture's cell:

        ```python
        conv3 = model.features[6]
        conv3_out = conv3(conv2_out1)
        print(conv3_out.shape)
        ```

        **What differs:** the slide says 394 channels and 394 filters; there are 384.
        """
    ),
    code(
        """
        acts = cl.LayerTap(model, ["features.6"]).run(x)
        print(acts["features.6"].shape)
        cl.plot_feature_maps(acts["features.6"][0], n=32, cols=8, note=note)
        """
    ),
    md(
        """
        ## `[18]`: "max pooling after the 3rd convolution", `features[7:9]`

        From the lecture's cell:

        ```python
        conv3_pooling = model.features[7:9]
        conv3_out1 = conv3_pooling(conv3_out)
        print(conv3_out1.shape)
        ```

        **What differs:** `features[7:9]` is not a max pooling: it is conv3's ReLU
        and conv4, which is why the size stays 13 and the channels become 256.
        AlexNet has no pooling after conv3; the third and last is `features.12`,
        after conv5.
        """
    ),
    code(
        """
        print([type(model.get_submodule(f"features.{i}")).__name__ for i in (7, 8)])
        acts = cl.LayerTap(model, ["features.8"]).run(x)
        print(acts["features.8"].shape)
        cl.plot_feature_maps(acts["features.8"][0], n=32, cols=8, note=note)
        """
    ),
    md(
        """
        ## `[19]`: the whole `features`, the average pooling, and the flatten

        From the lecture's cell:

        ```python
        WholeConvLayers = model.features
        out1 = WholeConvLayers(imageTensor.to(device))
        AvgPoolLayer = model.avgpool
        out2 = AvgPoolLayer(out1)
        ```

        **What differs:** the flatten is `torch.flatten` in AlexNet's `forward`, not a
        module, so it has no row of its own: it shows as the 9216 inputs of
        `classifier.1`. On the command line: `convlens shapes torchvision:alexnet`.
        """
    ),
    code(
        """
        print(report["features.12"].output_shape, report["avgpool"].output_shape)
        print(report["classifier.1"].input_shape, "= 256 x 6 x 6")
        acts = cl.LayerTap(model, ["features.12", "avgpool"]).run(x)  # the real values
        {name: tuple(value.shape) for name, value in acts.items()}
        """
    ),
    code(
        """
        report  # every layer: shapes, parameters, MACs, receptive field, formula
        """
    ),
]

LEARN: list[Cell] = [
    md(
        """
        # 7.2. What does CNN learn, with convlens

        The lecture's notebook "7.2. What does CNN learn.ipynb" draws the filters
        of AlexNet's first convolution, then asks what the other layers detect and
        answers by gradient ascent on the input, on MNIST: the picture that
        excites a filter most, a hidden neuron, an output class, and that class
        with an L1 penalty that forces "no ink". The slides show one code cell of
        it, `[4]`; the rest is formulas. This notebook follows the cell, then each
        formula, in the lecture's order, with the convlens calls that do the job.
        The docs page "From the lecture's notebooks to convlens"
        (`docs/notebooks.rst`) has them side by side.

        MNIST needs a download; convlens's stand-in is the digits CNN, trained on
        the handwritten digits that ship inside scikit-learn, with its weights in
        the package. convlens's activation of a filter, `ob.channel`, is the *mean*
        over positions where the slides' $a^k$ is the sum (the same maximizer, on a
        scale that does not depend on the map's size), and `ob.l1()` is the mean
        $|x|$ where the slides sum it.
        """,
        NOTE_ON_WEIGHTS,
        NOTE_ON_FIGURES,
    ),
    code(
        """
        %matplotlib inline
        import torch

        import convlens as cl
        from convlens import objectives as ob
        from convlens import zoo
        from convlens.render import plot_images
        """
    ),
    md(
        """
        ## The model (the slides show no cell before `[4]`)

        In the lecture's notebook `model` is the pretrained AlexNet, loaded as in
        7.1's `In [2]`.
        """
    ),
    code(
        """
        model = zoo.load("torchvision:alexnet", weights="auto")
        note = zoo.weights_note(model)  # None with the pretrained weights, else on every figure
        note or "pretrained ImageNet weights"
        """
    ),
    md(
        """
        ## `[4]`: draw the first 32 filters of conv1 in colour

        From the lecture's cell:

        ```python
        conv1 = model.features[0]
        weight1 = conv1.weight.data.cpu().numpy()
        for i in range(32):
            fig.add_subplot(4, 8, i+1)
            ImgArray = ImgArray*0.5+0.5 # convert[-1, 1] to [0, 1]
            plt.imshow(ImgArray)
        ```

        **What differs:** `scale="lecture"` is the cell's `w*0.5+0.5` exactly
        (clipped to [0, 1], as `plt.imshow` clips). Trained weights are mostly far
        smaller than 1, so that map draws them as an almost uniform grey. The
        default, `scale="symmetric"`, divides by the largest `|w|` of the filters
        drawn: zero stays grey, the sign shows, and all filters share one scale
        (`"minmax"` stretches each filter on its own).
        """
    ),
    code(
        """
        cl.FilterRenderer(model, "features.0", scale="lecture", note=note).plot(n=32, cols=8)
        """
    ),
    code(
        """
        cl.FilterRenderer(model, "features.0", note=note).plot(n=32, cols=8)  # scale="symmetric"
        """
    ),
    md(
        """
        ## The slides: what the filters and the neurons detect

        The rest of 7.2 has no code cell on the slides, only formulas, one per
        slide below, each done here on the digits CNN (and the first on AlexNet too).
        """
    ),
    code(
        """
        digits = zoo.digits_cnn()  # trained on scikit-learn's digits; no download
        digits
        """
    ),
    md(
        """
        ### The k-th filter of a convolution: $x^* = \\arg\\max_x a^k$

        With $a^k = \\sum_i \\sum_j a^k_{ij}$: "the filters detect a particular
        texture pattern". `value_range=(0, 1)` keeps every pixel between no ink (0)
        and ink (1), as the digits are.
        """
    ),
    code(
        """
        res = cl.NeuronVisualizer(digits, "features.3").maximize(range(16), steps=256, value_range=(0, 1))
        plot_images(res.image, [f"channel {k}" for k in range(16)])
        """
    ),
    md(
        """
        The same for a filter of AlexNet's fifth convolution, as a picture that the
        lecture's preprocessing (`normalize="lecture"`) turns into the input.
        """
    ),
    code(
        """
        am = cl.ActivationMaximizer(
            model, ob.channel("features.10", 5), input_shape=(1, 3, 224, 224), steps=128, normalize="lecture"
        )
        plot_images(am.run().picture, ["features.10, channel 5"], panel_size=4.0, note=note)
        """
    ),
    md(
        """
        ### A neuron of the fully connected hidden layer: $x^* = \\arg\\max_x a^j$

        "Each neuron detects an overall pattern in the picture rather than a
        particular texture pattern."
        """
    ),
    code(
        """
        nv = cl.NeuronVisualizer(digits, "classifier.0")
        res = nv.maximize(range(16), steps=256, value_range=(0, 1))
        plot_images(res.image, [f"neuron {j}" for j in range(16)])
        """
    ),
    md(
        """
        Beside the picture gradient ascent makes, the test digits that excite
        neuron 3 most.
        """
    ),
    code(
        """
        top = nv.top_examples(zoo.digits_dataset("test"), unit=3, k=9)
        top  # the grid: each digit's index in the test set and its activation
        """
    ),
    md(
        """
        ### The output layer: $x^* = \\arg\\max_x y^i$

        "CNN is easily fooled": one picture per class, and the network calls
        picture $i$ a digit $i$, though most of its pixels are ink where a
        handwritten digit is mostly blank.
        """
    ),
    code(
        """
        am = cl.ActivationMaximizer(
            digits, ob.class_logit(range(10)), input_shape=(10, 1, 28, 28), steps=256, seed=0, value_range=(0, 1)
        )
        res = am.run()
        with torch.no_grad():
            says = digits(res.image).argmax(1).tolist()
        plot_images(res.image, [f"class {i}: says {s}" for i, s in enumerate(says)], cols=5)
        """
    ),
    md(
        """
        ### With L1 regularization: $x^* = \\arg\\max_x \\left(y^i - \\sum_{i,j} |x_{ij}|\\right)$

        The penalty forces most pixels to be "no ink". `ob.l1()` is the mean $|x|$,
        so its weight of 100 is about 0.13 on the slides' sum over 28x28 pixels.
        """
    ),
    code(
        """
        am = cl.ActivationMaximizer(
            digits,
            ob.class_logit(range(10)) - 100 * ob.l1(),
            input_shape=(10, 1, 28, 28),
            steps=256,
            seed=0,
            value_range=(0, 1),
        )
        plot_images(am.run().image, [f"class {i}" for i in range(10)], cols=5)
        """
    ),
]

GRADCAM: list[Cell] = [
    md(
        """
        # 7.3 GradCAM, with convlens

        The slides show no cell of the lecture's notebook "7.3 GradCAM.ipynb", only
        that it is run; then comes HW4's table (the class index that AlexNet, VGG
        and ResNet18 predict for a picture, beside the one the student assigns),
        and then the slides on AlphaGo's policy network, which no notebook runs.
        This notebook does the three in that order, as the docs page "From the
        lecture's notebooks to convlens" (`docs/notebooks.rst`) maps them.
        """,
        NOTE_ON_WEIGHTS,
        NOTE_ON_FIGURES,
    ),
    code(
        """
        %matplotlib inline
        from IPython.display import Markdown

        import convlens as cl
        from convlens import images, zoo
        from convlens.render import plot_cam
        """
    ),
    md(
        """
        ## The model and the picture

        AlexNet and the picture as in 7.1 (`In [2]` and `In [6]`), but with the
        preprocessing AlexNet's weights were trained with, `preset="imagenet"` (the
        default): resize 256, centre crop 224, ImageNet's mean and std.
        """
    ),
    code(
        """
        model = zoo.load("torchvision:alexnet", weights="auto")
        note = zoo.weights_note(model)  # None with the pretrained weights, else on every figure
        picture = images.load_image(images.sample_image_path())
        x = images.preprocess(picture)  # preset="imagenet": what the weights expect
        names = images.imagenet_classes()
        x.shape
        """
    ),
    md(
        """
        ## Grad-CAM of the predicted class ("Run 7.3 GradCAM.ipynb")

        `GradCAM` weights the channels of a convolutional layer by the gradient of
        the class score and keeps the positive part; `target=None` explains the
        predicted class. The family (`GradCAMPlusPlus`, `ScoreCAM`, ...) takes the
        same arguments. On the command line:
        `convlens gradcam torchvision:alexnet --layer features.12 --out cam.png`.
        """
    ),
    code(
        """
        out = cl.GradCAM(model, "features.12")(x)  # target=None: the predicted class
        index = int(out.targets[0])
        print(cl.overlay(images.deprocess(x), out.maps[0]).shape)  # the heat map over the picture
        f"{names[index]} ({index}): {float(out.scores[0]):.2f}"
        """
    ),
    code(
        """
        plot_cam(images.deprocess(x), out.maps[0], title=f"{names[index]} ({index})", note=note)
        """
    ),
    code(
        """
        out  # the result itself: each map with its target and score
        """
    ),
    md(
        """
        `target=` explains another class, here "tabby".
        """
    ),
    code(
        """
        tabby = names.index("tabby")
        cat = cl.GradCAM(model, "features.12")(x, target=tabby)
        plot_cam(images.deprocess(x), cat.maps[0], title=f"tabby ({tabby}): {float(cat.scores[0]):.2f}", note=note)
        """
    ),
    md(
        """
        ## HW4: "Class index predicted by the model" for AlexNet, VGG, ResNet18

        The "class index you assigned" column stays the student's
        (`names.index("tabby")` finds an index by its name).

        **What differs:** the homework does not say which VGG; this takes VGG16.
        With random weights (no pretrained ones at hand) the predictions say nothing
        about the picture, and the table says so.
        """
    ),
    code(
        """
        rows = [
            "| model | class index predicted by the model | class | class index you assigned | weights |",
            "|---|---|---|---|---|",
        ]
        for spec, layer in [
            ("torchvision:alexnet", "features.12"),
            ("torchvision:vgg16", "features.30"),
            ("torchvision:resnet18", "layer4"),
        ]:
            net = zoo.load(spec, weights="auto")
            out = cl.GradCAM(net, layer)(x)
            index = int(out.targets[0])
            rows.append(f"| {spec} | {index} | {names[index]} | | {zoo.weights_note(net) or 'pretrained'} |")
        Markdown("\\n".join(rows))
        """
    ),
    md(
        """
        ## AlphaGo's policy network (the slides after HW4)

        A 19x19x48 input, zero padded to 23x23 for k 5x5 filters, then layers 2 to
        12 padded to 21x21 for k 3x3 filters, a 1x1 convolution with a bias per
        position and a softmax; no max pooling; k = 128, 192, 256, 384.

        **What differs:** the network comes with random weights only (its shapes
        are the point); the output is the softmax over the 361 points. On the
        command line: `convlens shapes convlens:alphago_policy`.
        """
    ),
    code(
        """
        policy = zoo.alphago_policy(k=192)
        go = cl.trace_shapes(policy, (1, 48, 19, 19))
        print(go.output_shape)  # a probability per point
        go  # 19x19 at every layer
        """
    ),
]

#: The notebooks, by file name, in the lecture's order.
NOTEBOOKS: dict[str, list[Cell]] = {
    "7.1_cnn.ipynb": CNN,
    "7.2_what_does_cnn_learn.ipynb": LEARN,
    "7.3_gradcam.ipynb": GRADCAM,
}


def build(cells: list[Cell]) -> nbformat.NotebookNode:
    """One notebook from its cells, with stable cell ids, no outputs, no execution counts."""
    # nbformat ships py.typed but leaves these functions unannotated.
    nb: nbformat.NotebookNode = nbformat.v4.new_notebook()  # type: ignore[no-untyped-call]
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    for i, (kind, source) in enumerate(cells):
        new_cell = nbformat.v4.new_markdown_cell if kind == "markdown" else nbformat.v4.new_code_cell
        cell = new_cell(source)  # type: ignore[no-untyped-call]
        cell.id = f"cell-{i:02d}"  # nbformat would pick random ids, and every run would differ
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def render() -> dict[str, str]:
    """Every notebook's file name and the exact text this script writes for it."""
    texts = {}
    for name, cells in NOTEBOOKS.items():
        text: str = nbformat.writes(build(cells))  # type: ignore[no-untyped-call]
        texts[name] = text + "\n"
    return texts


def main(argv: list[str] | None = None) -> int:
    """Write the notebooks, or with ``--check`` say which ones differ from what would be written."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=NOTEBOOKS_DIR, help="folder (default: notebooks/)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if any notebook differs")
    args = parser.parse_args(argv)
    out: Path = args.out
    stale = []
    for name, text in render().items():
        path = out / name
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(path)
        if not args.check:
            out.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if args.check and stale:
        names = ", ".join(str(p) for p in stale)
        print(f"out of date: {names}; run python scripts/make_notebooks.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
