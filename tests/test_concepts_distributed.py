"""convlens.concepts under torchrun: two gloo ranks, each its shard, every rank the same bank.

Run as a script under ``torchrun`` (``python -m torch.distributed.run ... tests/test_concepts_distributed.py
OUT``), each rank saves what it returned; the test compares with one process on the same data:

- fitted with two ranks, the bank is the same on both (bit for bit) and explains the layer as well as
  one process's: the relative error at most 5% above, the explained variance at most 0.01 below (the
  two fits see the positions in another order, so the banks differ, not their quality);
- under one process's bank, the top examples are exactly one process's (indices, positions, boxes,
  inputs); the values (strengths, maps, importance, errors) agree to float32 rounding, because each
  rank's batches hold other examples than one process's and its sums round differently.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from torch.utils.data import Subset, TensorDataset

import convlens as cl
from convlens.models.zoo import digits_cnn, digits_dataset
from helpers import torchrun

LAYER = "features.4"
FIELDS = (
    "indices",
    "strengths",
    "positions",
    "boxes",
    "maps",
    "inputs",
    "importance",
    "classes",
    "class_counts",
)


def data() -> Any:
    """359 of the digits: two ranks get 180 and 179 (DistributedSampler pads one)."""
    return Subset(digits_dataset("test"), range(359))


def run(bank: torch.Tensor | None) -> cl.ConceptsResult:
    return cl.concepts(
        digits_cnn(), LAYER, data(), 6, k=4, target="label", bank=bank, batch_size=32, progress=False
    )


def plain(res: cl.ConceptsResult) -> dict[str, Any]:
    saved: dict[str, Any] = {f: getattr(res, f) for f in FIELDS}
    saved.update(bank=res.bank, error=res.error, explained=res.explained, examples=res.examples)
    return saved


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
    bank = torch.load(out / "bank.pt")
    saved = {"fitted": plain(run(None)), "given": plain(run(bank)), "refused": refusal()}
    torch.save(saved, out / f"rank{dist.get_rank()}.pt")
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.slow  # torchrun
@pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed with gloo is needed"
)
def test_two_ranks_fit_as_well_and_rank_exactly_as_one_process(tmp_path: Path) -> None:
    one = run(None)
    torch.save(one.bank, tmp_path / "bank.pt")
    torchrun(__file__, str(tmp_path))
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    assert torch.equal(ranks[0]["fitted"]["bank"], ranks[1]["fitted"]["bank"])
    fitted = ranks[0]["fitted"]
    assert fitted["error"] <= 1.05 * one.error, (fitted["error"], one.error)
    assert fitted["explained"] >= one.explained - 0.01, (fitted["explained"], one.explained)
    for saved in ranks:  # both refuse, at the same step: neither waits for the other in a collective
        assert "needs nonnegative activations" in saved["refused"]
        assert "1 of them" in saved["refused"]
    for saved in ranks:
        given = saved["given"]
        assert given["examples"] == one.examples == 359
        for field in ("indices", "positions", "boxes", "inputs", "classes", "class_counts"):
            torch.testing.assert_close(given[field], getattr(one, field), rtol=0, atol=0, msg=field)
        for field in ("strengths", "maps", "importance"):
            expected = getattr(one, field)
            scale = float(expected.abs().max())
            torch.testing.assert_close(given[field], expected, rtol=0, atol=1e-4 * scale, msg=field)
        assert given["error"] == pytest.approx(one.error, rel=1e-4)
        assert given["explained"] == pytest.approx(one.explained, rel=1e-4)


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
