"""The sampled NMF against independent references: planted factors, scikit-learn's NMF, bounded memory.

The fit sees a fixed-size sample of the rows: where the data holds more rows than that (the sample
shrunk with ``monkeypatch``), the bank is still judged on every row.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.decomposition import NMF

from convlens.featureviz import nmf
from convlens.featureviz.nmf import SignedRowsError, StreamingNMF, blocks, priorities, solve_codes
from helpers import exact


def planted(
    n: int, channels: int, rows: int, *, noise: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``U W + noise`` from known nonnegative factors: sparse coefficients, distinct directions."""
    g = torch.Generator().manual_seed(seed)
    truth = torch.rand(n, channels, generator=g) * (torch.rand(n, channels, generator=g) < 0.5)
    truth = truth / truth.norm(dim=1, keepdim=True)
    codes = torch.rand(rows, n, generator=g) * (torch.rand(rows, n, generator=g) < 0.4)
    x = codes @ truth + noise * torch.rand(rows, channels, generator=g)
    return x, truth


def matched_cosines(found: torch.Tensor, truth: torch.Tensor) -> np.ndarray:
    """The cosine of each true factor with the found one the assignment pairs it with."""
    a = torch.nn.functional.normalize(found.double(), dim=1)
    b = torch.nn.functional.normalize(truth.double(), dim=1)
    cos = (b @ a.T).numpy()
    rows, cols = linear_sum_assignment(-cos)
    return np.asarray(cos[rows, cols])


def fitted(x: torch.Tensor, n: int, *, rows: int = 1024, seed: int = 0, signed: bool = False) -> torch.Tensor:
    return StreamingNMF(n, signed=signed, merge=False, seed=seed).fit(blocks(x, rows))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("sample", [None, 1000])  # the whole data (6000 rows), or a sixth of it
def test_planted_factors_are_recovered(
    seed: int, sample: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if sample is not None:
        monkeypatch.setattr(nmf, "SAMPLE_ROWS", sample)
    x, truth = planted(5, 24, 6000, noise=0.02, seed=seed)
    cosines = matched_cosines(fitted(x, 5, seed=seed), truth)
    assert cosines.min() >= 0.95, cosines


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("sample", [None, 1000])  # the whole data (8000 rows), or an eighth of it
def test_the_error_is_within_5_percent_of_scikit_learns_on_the_same_rows(
    sample: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if sample is not None:
        monkeypatch.setattr(nmf, "SAMPLE_ROWS", sample)
    x, _ = planted(6, 20, 8000, noise=0.1, seed=3)
    bank = fitted(x, 6)
    ours = float((x - solve_codes(x, bank) @ bank).norm() / x.norm())  # on every row, not the sample's
    reference = NMF(6, init="nndsvda", max_iter=1000, tol=1e-6, random_state=0)
    codes = reference.fit_transform(x.double().numpy())
    theirs = float(
        np.linalg.norm(x.double().numpy() - codes @ reference.components_) / np.linalg.norm(x.numpy())
    )
    assert ours <= 1.05 * theirs, (ours, theirs)


def test_the_same_seed_gives_the_same_bank() -> None:
    x, _ = planted(4, 12, 3000, noise=0.05, seed=4)
    assert torch.equal(fitted(x, 4, rows=256, seed=7), fitted(x, 4, rows=256, seed=7))


def test_the_bank_depends_on_the_rows_and_ids_not_on_their_blocks_or_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What makes the bank rank-invariant: the same (id, row) pairs in other blocks, in another order."""
    monkeypatch.setattr(nmf, "SAMPLE_ROWS", 500)  # a tenth of the rows: which ones are kept matters
    x, _ = planted(4, 12, 5000, noise=0.05, seed=9)
    one = StreamingNMF(4, signed=False, merge=False, seed=3)
    bank = one.fit(blocks(x, 100))
    shuffled = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))
    parts = zip(torch.split(x[shuffled], 37), torch.split(shuffled, 37), strict=True)
    other = StreamingNMF(4, signed=False, merge=False, seed=3)
    assert torch.equal(other.fit(parts), bank)
    assert one.ids is not None
    assert other.ids is not None
    assert torch.equal(one.ids, other.ids)
    reseeded = StreamingNMF(4, signed=False, merge=False, seed=4)
    reseeded.fit(blocks(x, 100))
    assert reseeded.ids is not None
    assert len(set(reseeded.ids.tolist()) & set(one.ids.tolist())) < 100  # about 10% of 500 in common


def test_the_sample_is_uniform_over_the_data() -> None:
    keys = priorities(torch.arange(20_000), seed=0)
    assert len(set(keys.tolist())) == 20_000
    kept = torch.sort(keys).indices[:2000]  # priority sampling: the lowest keys
    counts = torch.bincount(kept // 2000, minlength=10)  # 200 expected in each tenth; sd 13
    assert int(counts.min()) >= 150, counts
    assert int(counts.max()) <= 250, counts
    assert float(keys.double().mean()) == pytest.approx(2.0**51, rel=0.02)  # uniform on [0, 2**52)


def test_the_bank_is_nonnegative_and_in_the_unit_ball_and_semi_nmf_may_be_signed() -> None:
    x, _ = planted(3, 10, 2000, noise=0.05, seed=5)
    bank = fitted(x, 3)
    assert bool((bank >= 0).all())
    assert bool((bank.norm(dim=1) <= 1 + 1e-5).all())
    signed = x - x.mean(0)  # centred: half of every channel is negative
    semi = fitted(signed, 3, signed=True)
    assert bool((semi < 0).any())
    codes = solve_codes(signed, semi)
    assert bool((codes >= 0).all())
    assert float((signed - codes @ semi).norm() / signed.norm()) < 0.95


def test_the_sample_stays_bounded_whatever_the_number_of_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nmf, "SAMPLE_VALUES", 10 * 64)  # 64 rows of 10 channels
    x, _ = planted(3, 10, 5000, noise=0.05, seed=6)
    fit = StreamingNMF(3, signed=False, merge=False, seed=0)
    fit.fit(blocks(x, 100))
    assert fit.sample is not None
    assert fit.ids is not None
    assert fit.keys is not None
    assert fit.sample.shape == (64, 10)
    assert fit.seen == 5000
    assert torch.equal(fit.sample, x[fit.ids])  # the kept rows are the rows of those ids ...
    lowest = torch.sort(priorities(torch.arange(5000), seed=0)).values[:64]
    assert torch.equal(fit.keys, lowest)  # ... and of the lowest keys of all, in ascending order


def test_negative_rows_of_a_nonnegative_fit_are_refused_and_semi_nmf_takes_them() -> None:
    x, _ = planted(3, 10, 500, noise=0.05, seed=7)
    x[321, 4] = -0.5
    with pytest.raises(
        SignedRowsError, match=exact("1 negative values in the rows of a nonnegative fit")
    ) as caught:
        StreamingNMF(3, signed=False, merge=False, seed=0).fit(blocks(x, 100))
    assert caught.value.count == 1
    assert StreamingNMF(3, signed=True, merge=False, seed=0).fit(blocks(x, 100)).shape == (3, 10)


def test_codes_are_the_nonnegative_least_squares_solution() -> None:
    g = torch.Generator().manual_seed(8)
    bank = torch.rand(3, 6, generator=g)
    x = torch.randn(40, 6, generator=g)
    codes = solve_codes(x, bank, sweeps=200)
    assert bool((codes >= 0).all())
    # KKT: the gradient of the squared error is zero where a coefficient is positive, >= 0 where it is 0.
    gradient = (codes @ bank - x) @ bank.T
    tolerance = 1e-4 * float(x.abs().max())
    assert float(gradient[codes > 1e-6].abs().max()) <= tolerance
    assert float(gradient[codes <= 1e-6].min()) >= -tolerance
