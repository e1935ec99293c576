from __future__ import annotations

import re
import subprocess
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import torch
from torch import nn

import convlens as cl
from convlens.models.digits import (
    DigitsCNN,
    load_digits_cnn,
    load_digits_dataset,
    upsample_digits,
)

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "digits.rst"
SCRIPT = ROOT / "scripts" / "train_digits.py"
DATA_FILES = ("digits.npz", "digits_cnn.pt")
ACCURACY_LINE = re.compile(r"Held-out accuracy: (\d+\.\d)% \((\d+) of (\d+)\)")

# Bilinear upsampling 8 -> 28 (align_corners=False): output pixel i reads the
# input at (i + 0.5) * 8/28 - 0.5 = (4i - 5)/14, so input pixel 3 lends output
# pixels 9..15 the weights 1 - |4i - 47|/14.
HOT_PROFILE = torch.tensor([3.0, 7.0, 11.0, 13.0, 9.0, 5.0, 1.0]) / 14


def _raw_split() -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8], npt.NDArray[np.bool_]]:
    with resources.files("convlens").joinpath("data/digits.npz").open("rb") as file, np.load(file) as data:
        return data["images"], data["labels"], data["test"]


def _documented_accuracy() -> tuple[str, int, int]:
    found = ACCURACY_LINE.findall(DOCS.read_text(encoding="utf-8"))
    assert len(found) == 1, f"{DOCS} must state the held-out accuracy exactly once"
    percent, correct, total = found[0]
    return percent, int(correct), int(total)


def test_shipped_model_accuracy_matches_the_docs() -> None:
    model = load_digits_cnn()
    images, labels = load_digits_dataset("test").tensors
    with torch.no_grad():
        correct = int((model(images).argmax(dim=1) == labels).sum())
    total = len(labels)
    assert correct / total >= 0.97
    assert _documented_accuracy() == (f"{100 * correct / total:.1f}", correct, total)


def test_package_data_exists_and_is_small() -> None:
    data = resources.files("convlens").joinpath("data")
    sizes = [len(data.joinpath(name).read_bytes()) for name in DATA_FILES]
    assert all(size > 0 for size in sizes)
    assert sum(sizes) < 200 * 1024


def test_loading_does_not_import_scikit_learn() -> None:
    code = (
        "import sys\n"
        "from convlens.models.digits import load_digits_cnn, load_digits_dataset\n"
        "load_digits_cnn(); load_digits_dataset('all')\n"
        "print(sorted(m for m in sys.modules if m == 'sklearn' or m.startswith('sklearn.')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(("split", "size"), [("train", 1437), ("test", 360), ("all", 1797)])
def test_dataset_shapes_dtypes_and_range(split: str, size: int) -> None:
    dataset = load_digits_dataset(split)  # type: ignore[arg-type]
    images, labels = dataset.tensors
    assert images.shape == (size, 1, 28, 28)
    assert images.dtype == torch.float32
    assert labels.shape == (size,)
    assert labels.dtype == torch.int64
    assert float(images.min()) == 0.0
    assert float(images.max()) == 1.0
    assert set(labels.tolist()) == set(range(10))
    # White ink on black: most of the picture is dark, and the corners are almost never inked.
    assert float(images.mean()) < 0.35
    assert float((images < 0.5).float().mean()) > 0.6
    assert float(images[:, :, [0, 0, -1, -1], [0, -1, 0, -1]].mean()) < 0.05


def test_default_split_is_test() -> None:
    assert len(load_digits_dataset()) == 360


def test_split_is_disjoint_stratified_and_covers_every_sample() -> None:
    raw, labels, test = _raw_split()
    assert raw.shape == (1797, 8, 8)
    assert raw.dtype == np.uint8
    assert int(raw.max()) == 16
    assert test.dtype == np.bool_
    test_index = set(np.flatnonzero(test).tolist())
    train_index = set(np.flatnonzero(~test).tolist())
    assert not test_index & train_index
    assert test_index | train_index == set(range(1797))
    assert (len(train_index), len(test_index)) == (1437, 360)
    for digit in range(10):  # stratified: each digit is 20% held out, give or take one
        in_class = labels == digit
        assert abs(int(test[in_class].sum()) - 0.2 * int(in_class.sum())) <= 1

    every = load_digits_dataset("all").tensors
    mask = torch.from_numpy(test)
    for split, part in (("train", ~mask), ("test", mask)):
        images, targets = load_digits_dataset(split).tensors  # type: ignore[arg-type]
        torch.testing.assert_close(images, every[0][part], rtol=0, atol=0)
        torch.testing.assert_close(targets, every[1][part], rtol=0, atol=0)
    torch.testing.assert_close(every[0], upsample_digits(torch.from_numpy(raw)), rtol=0, atol=0)
    assert every[1].tolist() == labels.tolist()


def test_bad_split_lists_the_choices_and_the_nearest() -> None:
    message = "split must be one of 'train', 'test', 'all'; got 'tset'. Did you mean 'test'?"
    with pytest.raises(cl.InvalidArgumentError, match=re.escape(message)):
        load_digits_dataset("tset")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="split must be one of"):
        load_digits_dataset(0)  # type: ignore[arg-type]


def test_loading_keeps_the_global_rng_and_gives_an_eval_model() -> None:
    state = torch.random.get_rng_state()
    model = load_digits_cnn()
    assert torch.equal(torch.random.get_rng_state(), state)
    assert isinstance(model, DigitsCNN)
    assert not any(module.training for module in model.modules())
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in model.parameters())
    again = load_digits_cnn()
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_architecture_as_documented() -> None:
    model = load_digits_cnn()
    report = cl.trace_shapes(model, (1, 1, 28, 28))
    shapes = {row.name: row.output_shape for row in report}
    assert shapes["features.0"] == (1, 8, 24, 24)
    assert shapes["features.2"] == (1, 8, 12, 12)
    assert shapes["features.3"] == (1, 16, 8, 8)
    assert shapes["features.5"] == (1, 16, 4, 4)
    assert shapes["classifier.0"] == (1, 64)
    assert report.output_shape == (1, 10)
    assert report.params == sum(p.numel() for p in model.parameters()) == 20522
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == 3
    assert not any(relu.inplace for relu in relus)


def test_upsample_full_ink_is_all_ones() -> None:
    out = upsample_digits(torch.full((3, 8, 8), 16, dtype=torch.uint8))
    assert out.shape == (3, 1, 28, 28)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.ones(3, 1, 28, 28))
    assert float(out.max()) <= 1.0


def test_upsample_blank_is_all_zeros() -> None:
    out = upsample_digits(torch.zeros(1, 8, 8, dtype=torch.uint8))
    assert torch.equal(out, torch.zeros(1, 1, 28, 28))


def test_upsample_one_hot_pixel_by_hand() -> None:
    raw = torch.zeros(1, 8, 8, dtype=torch.uint8)
    raw[0, 3, 3] = 16
    out = upsample_digits(raw)[0, 0]
    expected = torch.zeros(28, 28)
    expected[9:16, 9:16] = torch.outer(HOT_PROFILE, HOT_PROFILE)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(out, out.T)  # the same blob along rows and columns
    torch.testing.assert_close(out.sum(), torch.tensor(3.5**2))  # 3.5 output pixels per input pixel
    # The mirror image of the input gives the mirror image of the output.
    mirrored = upsample_digits(raw.flip(-1, -2))[0, 0]
    torch.testing.assert_close(mirrored, out.flip(-1, -2))


def test_upsample_is_the_same_for_every_input_dtype() -> None:
    raw = torch.randint(0, 17, (4, 8, 8), generator=torch.Generator().manual_seed(0))
    a = upsample_digits(raw)
    b = upsample_digits(raw.to(torch.float64))
    c = upsample_digits(raw.to(torch.uint8))
    assert a.dtype == b.dtype == c.dtype == torch.float32
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c)
    assert 0.0 <= float(a.min()) <= float(a.max()) <= 1.0


def test_upsample_rejects_bad_input() -> None:
    with pytest.raises(cl.ShapeError, match=re.escape("images must have shape (N, 8, 8); got (8, 8).")):
        upsample_digits(torch.zeros(8, 8))
    with pytest.raises(cl.ShapeError, match=re.escape("got (2, 1, 8, 8)")):
        upsample_digits(torch.zeros(2, 1, 8, 8))
    with pytest.raises(cl.InvalidTypeError, match=re.escape("images must be a torch.Tensor; got ndarray.")):
        upsample_digits(np.zeros((1, 8, 8)))  # type: ignore[arg-type]


def test_shipped_data_is_scikit_learns_digits() -> None:
    datasets = pytest.importorskip("sklearn.datasets")
    digits = datasets.load_digits()
    raw, labels, _ = _raw_split()
    np.testing.assert_array_equal(raw, digits.images)
    np.testing.assert_array_equal(labels, digits.target)


@pytest.mark.slow
def test_training_script_reproduces_the_data_and_the_accuracy(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path)], capture_output=True, text=True, check=True
    )
    with np.load(tmp_path / "digits.npz") as fresh:
        for name, shipped in zip(("images", "labels", "test"), _raw_split(), strict=True):
            np.testing.assert_array_equal(fresh[name], shipped, err_msg=name)
    found = re.search(r"test accuracy: [\d.]+% \((\d+) of (\d+)\)", done.stdout)
    assert found is not None, done.stdout
    correct, total = int(found[1]), int(found[2])
    assert total == 360
    assert correct / total >= 0.97
