"""Under torchrun: two gloo ranks on loopback return what one process returns, each reading its shard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

from convlens import NeuronVisualizer
from distributed_cases import CASES, RecordingDataset, case_model
from helpers import torchrun

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed with gloo is needed"
)

WORKER = Path(__file__).with_name("distributed_worker.py")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    out = tmp_path_factory.mktemp("ranks")
    torchrun(str(WORKER), str(out))
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


def one_process(size: int, **kwargs: Any) -> Any:
    model, layer = case_model()
    return NeuronVisualizer(model, layer).top_examples(RecordingDataset(size), progress=False, **kwargs)


def assert_same(got: dict[str, Any], expected: Any) -> None:
    for field in ("indices", "activations", "inputs", "positions", "boxes"):
        torch.testing.assert_close(got[field], getattr(expected, field), rtol=0, atol=0, msg=field)


@pytest.mark.slow  # torchrun
@pytest.mark.parametrize("case", sorted(CASES))
def test_every_rank_returns_the_one_process_result(ranks: list[dict[str, Any]], case: str) -> None:
    expected = one_process(CASES[case], k=5, batch_size=4)
    for saved in ranks:
        assert_same(saved[case]["result"], expected)


@pytest.mark.slow  # torchrun
@pytest.mark.parametrize("case", sorted(CASES))
def test_each_rank_reads_only_its_shard(ranks: list[dict[str, Any]], case: str) -> None:
    size = CASES[case]
    data = RecordingDataset(size)
    shards: list[set[int]] = [
        set(DistributedSampler(data, num_replicas=2, rank=r, shuffle=False)) for r in range(2)
    ]
    assert [set(saved[case]["read"]) for saved in ranks] == shards
    assert shards[0] | shards[1] == set(range(size))


@pytest.mark.slow  # torchrun
def test_the_padding_duplicate_is_not_counted_twice(ranks: list[dict[str, Any]]) -> None:
    indices = ranks[0]["padded"]["result"]["indices"]
    assert 23 % 2
    assert 0 in ranks[1]["padded"]["read"]
    assert (indices == 0).any()  # and example 0 is a winner, so counting it twice would show
    for row in indices.tolist():
        assert len(row) == len(set(row))


@pytest.mark.slow  # torchrun
def test_a_dataloader_keeps_its_own_distributed_sampler(ranks: list[dict[str, Any]]) -> None:
    expected = one_process(23, unit=[1, 2], k=4)
    for saved in ranks:
        assert set(saved["loader"]["read"]) == set(
            saved["loader"]["own"]
        )  # its shuffled shard, ours untouched
        assert_same(saved["loader"]["result"], expected)
    assert set(ranks[0]["loader"]["own"]) != set(range(0, 23, 2))  # it did shuffle
