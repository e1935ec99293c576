"""Train the digits CNN that convlens ships, and write its data and weights.

Reads scikit-learn's 1797 handwritten 8x8 digits, makes a stratified 80/20
train/test split, writes ``src/convlens/data/digits.npz`` (raw images, labels,
the test mask), trains :class:`convlens.models.digits.DigitsCNN` on the training
part and writes its state dict to ``src/convlens/data/digits_cnn.pt``.
The test part is never used for training; its accuracy is printed at the end.

Everything is seeded and runs on one CPU thread with deterministic
algorithms, so two runs on the same machine write the same bytes.

Usage (needs scikit-learn, which convlens itself does not)::

    pip install scikit-learn
    python scripts/train_digits.py
"""

from __future__ import annotations

import argparse
import io
import time
import zipfile
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import Tensor

from convlens.models.digits import DigitsCNN, upsample_digits

DATA_DIR = Path(__file__).resolve().parents[1] / "src" / "convlens" / "data"


def make_split(labels: npt.NDArray[np.int64], *, seed: int, test_size: float) -> npt.NDArray[np.bool_]:
    """A boolean mask of the test samples of a stratified split."""
    _, test_index = train_test_split(
        np.arange(len(labels)), test_size=test_size, stratify=labels, random_state=seed
    )
    test = np.zeros(len(labels), dtype=np.bool_)
    test[test_index] = True
    return test


def write_npz(path: Path, arrays: dict[str, npt.NDArray[np.generic]]) -> None:
    """Like ``np.savez_compressed`` but byte for byte reproducible (fixed zip timestamps)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, buffer.getvalue(), compresslevel=9)


def shift(images: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    """Shift each image by a random whole number of pixels in each direction, filling with no ink."""
    n, _, h, w = images.shape
    pad = F.pad(images, (max_shift, max_shift, max_shift, max_shift))
    offsets = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=generator)
    return torch.stack([pad[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets.tolist())])


def accuracy(model: DigitsCNN, images: Tensor, labels: Tensor) -> tuple[int, int]:
    """Correct predictions and total."""
    model.eval()
    with torch.no_grad():
        predicted = model(images).argmax(dim=1)
    return int((predicted == labels).sum()), len(labels)


def train(
    images: Tensor,
    labels: Tensor,
    *,
    seed: int,
    epochs: int,
    batch_size: int,
    lr: float,
    max_shift: int,
) -> DigitsCNN:
    """Train a fresh DigitsCNN with Adam and a cosine learning-rate schedule."""
    torch.manual_seed(seed)
    model = DigitsCNN()
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * -(-len(labels) // batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(labels), generator=generator)
        total = 0.0
        for start in range(0, len(labels), batch_size):
            batch = order[start : start + batch_size]
            x = shift(images[batch], max_shift, generator) if max_shift else images[batch]
            loss = F.cross_entropy(model(x), labels[batch])
            optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(batch)
        if (epoch + 1) % 5 == 0 or epoch == 0:
            print(f"epoch {epoch + 1:3d}  loss {total / len(labels):.4f}")
    return model.eval()


def main() -> None:
    """Parse arguments, write the data, train, report, write the weights."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and the training (0)")
    parser.add_argument("--epochs", type=int, default=40, help="training epochs (40)")
    parser.add_argument("--batch-size", type=int, default=32, help="minibatch size (32)")
    parser.add_argument("--lr", type=float, default=3e-3, help="initial Adam learning rate (3e-3)")
    parser.add_argument("--max-shift", type=int, default=2, help="random shift in pixels at 28x28 (2)")
    parser.add_argument("--out", type=Path, default=DATA_DIR, help="where to write the files")
    args = parser.parse_args()

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    began = time.perf_counter()

    digits = load_digits()
    raw = np.asarray(digits.images).astype(np.uint8)  # (1797, 8, 8), values 0..16
    labels = np.asarray(digits.target).astype(np.int64)
    if raw.max() > 16 or not np.array_equal(raw, digits.images):
        raise SystemExit("unexpected pixel values in sklearn's digits")
    test = make_split(labels, seed=args.seed, test_size=0.2)

    args.out.mkdir(parents=True, exist_ok=True)
    write_npz(args.out / "digits.npz", {"images": raw, "labels": labels.astype(np.uint8), "test": test})

    images = upsample_digits(torch.from_numpy(raw))
    targets = torch.from_numpy(labels)
    mask = torch.from_numpy(test)
    model = train(
        images[~mask],
        targets[~mask],
        seed=args.seed,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        max_shift=args.max_shift,
    )
    torch.save(model.state_dict(), args.out / "digits_cnn.pt")

    for name, part in (("train", ~mask), ("test", mask)):
        correct, total = accuracy(model, images[part], targets[part])
        print(f"{name} accuracy: {100 * correct / total:.1f}% ({correct} of {total})")
    print(f"took {time.perf_counter() - began:.1f} s")


if __name__ == "__main__":
    main()
