"""convlens.concepts under torchrun: 2 and 3 gloo ranks, each its shard, every rank one process's bank.

Run as a script under ``torchrun`` (``python -m torch.distributed.run ... tests/test_concepts_distributed.py
OUT``), each rank saves what it returned; the test compares with one process on the same data, every
process with one intra-op thread (the digits CNN's activations of an example are then the same bits
whatever batch it is read in):

- fitted, the bank is one process's bit for bit, on 1, 2 and 3 ranks (the fit is a function of a
  sample of positions chosen by a hash of their place in the data), both with the default sample
  (every position of the 359 digits) and with one of 3000 of their 22976 positions; and so are the
  top examples (indices, positions, boxes, inputs);
- the values summed over the data (strengths, maps, importance, errors) agree to float32 rounding,
  because each rank's batches hold other examples than one process's and its sums round differently;
- under a given bank (one process's), the same; and on 2 digits, where one of 3 ranks reads none;
- a negative activation under NMF is refused by every rank, at the same block.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from torch.utils.data import Subset, TensorDataset

import convlens as cl
from convlens.featureviz import nmf
from convlens.models.zoo import digits_cnn, digits_dataset
from helpers import torchrun

LAYER = "features.4"
EXACT = ("bank", "indices", "positions", "boxes", "inputs", "classes", "class_counts")
CLOSE = ("strengths", "maps", "importance")
SMALL_SAMPLE = 3000  # rows of the fit's sample in the "small" runs: 13% of the 359 x 64 positions


def data() -> Any:
    """359 of the digits: two ranks get 180 and 179, three 120, 120 and 119 (DistributedSampler pads)."""
    return Subset(digits_dataset("test"), range(359))


def run(bank: torch.Tensor | None, examples: int = 359, n: int = 6) -> cl.ConceptsResult:
    return cl.concepts(
        digits_cnn(), LAYER, Subset(data(), range(examples)), n, k=4, target="label", bank=bank,
        batch_size=32, progress=False,
    )  # fmt: skip


def plain(res: cl.ConceptsResult) -> dict[str, Any]:
    saved: dict[str, Any] = {f: getattr(res, f) for f in (*EXACT, *CLOSE)}
    saved.update(error=res.error, explained=res.explained, examples=res.examples)
    return saved


def runs(bank: torch.Tensor) -> dict[str, dict[str, Any]]:
    """Fitted with the default sample and with a small one, under the given ``bank``, and on 2 digits."""
    fitted = plain(run(None))
    default = nmf.SAMPLE_ROWS
    nmf.SAMPLE_ROWS = SMALL_SAMPLE
    try:
        small = plain(run(None))
    finally:
        nmf.SAMPLE_ROWS = default
    # 2 examples: with 3 ranks, one reads none (its shard is padding) and merges zeros.
    return {"fitted": fitted, "small": small, "given": plain(run(bank)), "tiny": plain(run(None, 2, n=3))}


def refusal() -> str:
    """NMF of activations with one negative value, in an example only rank 1 reads (an odd position)."""
    x = torch.rand(48, 3, 4, 4)
    x[41, 0, 0, 0] = -1.0
    try:
        cl.concepts(torch.nn.Sequential(torch.nn.Identity()), "0", TensorDataset(x), 2, importance=None,
                    batch_size=4, progress=False)  # fmt: skip
    except cl.InvalidArgumentError as err:
        return str(err)
    return "not refused"


def _worker(out: Path) -> None:
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    saved: dict[str, Any] = runs(torch.load(out / "bank.pt"))
    saved["refused"] = refusal()
    torch.save(saved, out / f"rank{dist.get_rank()}.pt")
    dist.barrier()
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread, as every rank has (a float sum may be split otherwise by more threads)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def one(one_thread: None) -> dict[str, dict[str, Any]]:
    """One process's results (fitted, small sample, given its own fitted bank)."""
    bank = run(None).bank
    return runs(bank)


@pytest.mark.slow  # torchrun
@pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed with gloo is needed"
)
@pytest.mark.parametrize("ranks", [2, 3])
def test_every_rank_fits_one_process_s_bank_bit_for_bit(
    ranks: int, one: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    torch.save(one["fitted"]["bank"], tmp_path / "bank.pt")
    torchrun(__file__, str(tmp_path), ranks=ranks)
    every = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(ranks)]
    assert not torch.equal(one["small"]["bank"], one["fitted"]["bank"])  # the small sample is another fit
    for saved in every:
        for run_name, examples in (("fitted", 359), ("small", 359), ("given", 359), ("tiny", 2)):
            got, expected = saved[run_name], one[run_name]
            assert got["examples"] == expected["examples"] == examples
            for field in EXACT:
                assert torch.equal(got[field], expected[field]), (run_name, field)
            for field in CLOSE:
                scale = float(expected[field].abs().max())
                torch.testing.assert_close(got[field], expected[field], rtol=0, atol=1e-4 * scale)
            assert got["error"] == pytest.approx(expected["error"], rel=1e-4)
            assert got["explained"] == pytest.approx(expected["explained"], rel=1e-4)
        # Every rank refuses, at the same block: none waits for another in a collective.
        assert "needs nonnegative activations" in saved["refused"]
        assert "1 of them" in saved["refused"]


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
