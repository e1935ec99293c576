"""Nonnegative matrix factorization streamed over a dataset: a concept bank from running statistics.

The activations of a layer at every position of every example are the rows of ``X`` (``P x C``,
``P`` as large as the data). The bank ``W`` (``n x C``) and the coefficients ``U >= 0`` (``P x n``)
minimize ``||X - U W||_F^2``; for ``"nmf"`` the bank is nonnegative too, for ``"semi-nmf"`` it is
signed. ``X`` is never held: blocks of rows arrive one at a time and the fit keeps the online
dictionary learning statistics of Mairal et al. (2010), ``A = sum U^T U`` (``n x n``) and
``B = sum U^T X`` (``n x C``), so memory does not grow with the data. Each block's coefficients come
from the current bank by HALS (coordinate descent on each concept's column, clamped at 0); the bank
then takes a block coordinate step on ``A`` and ``B``, each row kept inside the unit ball.

Under ``torchrun`` every rank reads its own blocks and the statistics of each step are summed over
the ranks before the bank moves, so every rank holds the same bank; a rank whose data has ended adds
zeros until every rank is done.

References:
    Mairal, Bach, Ponce, Sapiro, "Online Learning for Matrix Factorization and Sparse Coding", JMLR 2010.
    https://www.jmlr.org/papers/v11/mairal10a.html
    Cichocki and Phan, "Fast local algorithms for large scale nonnegative matrix and tensor
    factorizations" (HALS), IEICE 2009.

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> truth = torch.rand(3, 8, generator=g)
    >>> x = torch.rand(600, 3, generator=g) @ truth
    >>> nmf = StreamingNMF(3, signed=False, merge=False, seed=0)
    >>> bank = nmf.fit(x.split(100))
    >>> bank.shape, bool((bank >= 0).all())
    (torch.Size([3, 8]), True)
    >>> codes = solve_codes(x, bank)
    >>> bool(((x - codes @ bank).norm() / x.norm()) < 0.05)
    True
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import Tensor

from convlens.core.distributed import all_sum, rank
from convlens.errors import InvalidArgumentError

__all__ = [
    "CODE_SWEEPS",
    "POLISH_EPOCHS",
    "SAMPLE_ROWS",
    "SAMPLE_VALUES",
    "StreamingNMF",
    "blocks",
    "solve_codes",
]

#: HALS sweeps over the concepts when solving for the coefficients of a block of rows.
CODE_SWEEPS = 12

#: How many activation values (rows x channels) the uniform sample of positions holds: 8 MiB of
#: float32, whatever the data's size ...
SAMPLE_VALUES = 2**21

#: ... and at most this many rows (positions).
SAMPLE_ROWS = 2**15

#: Alternations over the sample that polish the streamed bank at the end of the fit.
POLISH_EPOCHS = 40

_TINY = 1e-12


def solve_codes(x: Tensor, bank: Tensor, *, sweeps: int = CODE_SWEEPS, start: Tensor | None = None) -> Tensor:
    """The nonnegative coefficients ``U`` (``(P, n)``) minimizing ``||x - U bank||`` row by row.

    A ridge-regularized least-squares start clamped at 0 (or ``start``, ``(P, n)``: the previous
    coefficients of the same rows), then ``sweeps`` HALS sweeps (each
    concept's coefficients set to their exact nonnegative optimum given the others'). Rows of
    ``bank`` that are all zero get coefficient 0. In float32 at least.

    Example:
        >>> bank = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> solve_codes(torch.tensor([[2.0, -1.0]]), bank).tolist()
        [[2.0, 0.0]]
    """
    work = torch.promote_types(x.dtype, torch.float32)
    x, bank = x.to(work), bank.to(work)
    n = bank.shape[0]
    gram = bank @ bank.T
    diagonal = gram.diagonal()
    live = diagonal > _TINY
    ridge = torch.eye(n, dtype=work, device=x.device) * (_TINY + 1e-6 * float(diagonal.mean()))
    projected = bank @ x.T  # (n, P): one row per concept, contiguous
    if start is None:
        codes = torch.linalg.solve(gram + ridge, projected).clamp_(min=0)
    else:
        codes = start.T.to(work).contiguous()
    codes[~live] = 0
    order = [j for j in range(n) if bool(live[j])]
    for _ in range(sweeps):
        for j in order:
            step = (projected[j] - gram[j] @ codes) / diagonal[j]
            codes[j] = (codes[j] + step).clamp_(min=0)
    codes_t: Tensor = codes.T
    return codes_t


def blocks(x: Tensor, rows: int, generator: torch.Generator) -> Iterator[Tensor]:
    """The rows of ``x`` (``(P, C)``) in a seeded random order, ``rows`` at a time."""
    order = torch.randperm(len(x), generator=generator).to(x.device)
    yield from torch.split(x.index_select(0, order), rows)


class SignedRowsError(InvalidArgumentError):
    """Negative values in the rows of a nonnegative fit, counted over every rank (all raise it).

    ``convlens.concepts`` raises it with the layer named and the fix; a caller that can fall back to
    ``method="semi-nmf"`` catches it by type.
    """

    def __init__(self, count: int, message: str | None = None) -> None:
        super().__init__(message or f"{count} negative values in the rows of a nonnegative fit")
        self.count = count


class StreamingNMF:
    """A concept bank fitted over blocks of rows in one pass, from running statistics.

    Args:
        n: How many concepts.
        signed: A signed bank (semi-NMF); False keeps the bank nonnegative (NMF).
        merge: Sum every step's statistics over the ``torchrun`` ranks.
        seed: Seeds the uniform sample of rows that polishes the bank.
        sweeps: HALS sweeps for each block's coefficients.
        forget: Mairal's ``rho``: step ``t`` scales the past statistics by ``(1 - 1/t) ** forget``,
            so the early steps (made with a poor bank) fade.
    """

    def __init__(
        self, n: int, *, signed: bool, merge: bool, seed: int, sweeps: int = CODE_SWEEPS, forget: float = 1.0
    ) -> None:
        self.n, self.signed, self.merge, self.seed = n, signed, merge, seed
        self.sweeps, self.forget = sweeps, forget
        self.epochs = POLISH_EPOCHS
        self.generator = torch.Generator().manual_seed(seed + 1)  # the sample's priorities
        self.sample: Tensor | None = None  # (rows, C): the rows of lowest priority so far
        self.priority: Tensor | None = None
        self.bank: Tensor | None = None
        self.width, self.device = 0, torch.device("cpu")
        self.a: Tensor | None = None
        self.b: Tensor | None = None
        self.steps = 0

    def fit(self, source: Iterable[Tensor]) -> Tensor:
        """Fit on the blocks ``source`` yields (``(rows, C)`` each); returns the ``(n, C)`` bank.

        Rows of the bank that end up unused (all zero) are left zero. Every rank must call it (with
        its own blocks, possibly none).
        """
        it = iter(source)
        x = next(it, None)
        self._start(x)
        while self._step(x):
            x = next(it, None)
        self._polish()
        if self.bank is None:  # pragma: no cover - _start sets it
            raise RuntimeError("no bank")
        return self.bank

    def _keep(self, x: Tensor) -> None:
        """Priority sampling: each row gets a seeded uniform priority; the lowest ones are kept.

        A uniform sample of every row seen, of at most ``SAMPLE_VALUES`` values.
        """
        capacity = max(min(SAMPLE_VALUES // max(x.shape[1], 1), SAMPLE_ROWS), 16 * self.n)
        priority = torch.rand(len(x), generator=self.generator, dtype=torch.float64).to(x.device)
        if self.sample is not None and self.priority is not None:
            x, priority = torch.cat([self.sample, x]), torch.cat([self.priority, priority])
        if len(x) > capacity:
            lowest = torch.topk(priority, capacity, largest=False, sorted=False).indices
            x, priority = x[lowest], priority[lowest]
        self.sample, self.priority = x, priority

    def _polish(self) -> None:
        """Alternate coefficients and bank over the sample (batch HALS) from two starts; keep the better.

        The starts are the streamed bank and the sample's own NNDSVD (NMF has local minima: a start
        from the SVD finds the good one more often, the streamed bank has seen every row). Every
        rank polishes on its own sample with the statistics summed over the ranks: the sample of the
        whole data, every rank the same bank.
        """
        if self.bank is None:  # pragma: no cover - set by _start
            raise RuntimeError("not started")
        best, lowest = self.bank, float("inf")
        for start in (self.bank, self._nndsvd(self.sample)):
            bank, loss = self._alternate(start)
            if loss < lowest:
                best, lowest = bank, loss
        revived = self._revive(best)
        if revived is not None:  # a concept went unused: it restarts where the bank explains least
            bank, loss = self._alternate(revived)
            if loss <= lowest:
                best = bank
        self.bank = best

    def _revive(self, bank: Tensor) -> Tensor | None:
        """The bank with each unused (all-zero) row set to a sample row the bank explains worst; None: none unused.

        Rank 0 chooses from its sample and the others add zeros (an exact broadcast through the sum).
        """
        dead = bank.norm(dim=1) <= _TINY
        if not bool(dead.any()):
            return None
        chosen = torch.zeros_like(bank)
        sample = self.sample
        if sample is not None and len(sample) and rank() == 0:
            residual = (sample - solve_codes(sample, bank, sweeps=self.sweeps) @ bank).norm(dim=1)
            worst = torch.argsort(residual, descending=True, stable=True)[: int(dead.sum())]
            rows = sample[worst] if self.signed else sample[worst].clamp(min=0)
            rows = rows / rows.norm(dim=1, keepdim=True).clamp(min=_TINY)
            chosen[dead.nonzero().flatten()[: len(rows)]] = rows
        chosen = all_sum(chosen, self.merge)
        return torch.where(dead[:, None], chosen, bank)

    def _alternate(self, bank: Tensor) -> tuple[Tensor, float]:
        """``epochs`` alternations over the sample from ``bank``; the bank and its squared error on the sample."""
        n, width = bank.shape
        sample = self.sample
        codes = None
        for epoch in range(self.epochs + 1):
            if sample is None:
                stats = torch.zeros(n * n + n * width + 1, dtype=torch.float64, device=bank.device)
            else:  # warm: two sweeps from the last epoch's coefficients
                codes = solve_codes(sample, bank, sweeps=2 if codes is not None else self.sweeps, start=codes)
                error = (sample - codes @ bank).square().sum().reshape(1)
                stats = torch.cat([(codes.T @ codes).flatten(), (codes.T @ sample).flatten(), error]).double()
            stats = all_sum(stats, self.merge)
            if epoch == self.epochs:
                return bank, float(stats[-1])
            a, b = stats[: n * n].view(n, n).float(), stats[n * n : -1].view(n, width).float()
            for _ in range(3):
                bank = _bank_step(bank, a, b, signed=self.signed)
        return bank, float("inf")  # pragma: no cover - the loop returns

    def _start(self, x: Tensor | None) -> None:
        """The starting bank: :meth:`_nndsvd` of the first block of every rank."""
        mine = torch.tensor(
            [0.0 if x is None else float(x.shape[1]), float(x is not None)], dtype=torch.float64
        )
        sizes = all_sum(mine, self.merge)  # every rank with data has the same width
        width = round(float(sizes[0]) / max(float(sizes[1]), 1.0))
        device = torch.device("cpu") if x is None else x.device
        self.width, self.device = width, device
        self.bank = self._nndsvd(x)
        self.a = torch.zeros(self.n, self.n, dtype=torch.float64, device=device)
        self.b = torch.zeros(self.n, width, dtype=torch.float64, device=device)

    def _nndsvd(self, x: Tensor | None) -> Tensor:
        """NNDSVD (Boutsidis and Gallopoulos, 2008) of the rows ``x`` of every rank: an ``(n, C)`` bank.

        The top ``n`` right singular vectors ``v_j`` of the rows come from their Gram matrix (summed
        over the ranks); each concept is the positive or the negative part of ``v_j`` (for semi-NMF,
        ``v_j`` or ``-v_j``), whichever carries more of the rows (the norms of ``u_j = X v_j`` split by
        sign, summed over the ranks too), so every rank gets the same bank.
        """
        rows = (
            torch.zeros(0, self.width, dtype=torch.float64, device=self.device) if x is None else x.double()
        )
        gram = all_sum(rows.T @ rows, self.merge)
        values, vectors = torch.linalg.eigh(gram)  # ascending
        order = torch.argsort(values, descending=True, stable=True)[: self.n]
        vectors = vectors[:, order].T  # (n, C), largest first
        u = rows @ vectors.T  # (rows, n)
        split = torch.stack([u.clamp(min=0).square().sum(0), u.clamp(max=0).square().sum(0)])
        split = all_sum(split, self.merge)  # (2, n): how much of the rows each sign carries
        up = vectors.clamp(min=0).norm(dim=1) * split[0].sqrt()
        down = (-vectors).clamp(min=0).norm(dim=1) * split[1].sqrt()
        sign = torch.where(up >= down, 1.0, -1.0).to(vectors)[:, None]
        start = sign * vectors if self.signed else (sign * vectors).clamp(min=0)
        start = start / start.norm(dim=1, keepdim=True).clamp(min=_TINY)
        bank = torch.zeros(self.n, self.width, dtype=torch.float32, device=self.device)
        bank[: len(start)] = start.float()
        return bank

    def _step(self, x: Tensor | None) -> bool:
        """One step on the block ``x`` (None: this rank has no more); False once every rank is done."""
        bank, a, b = self.bank, self.a, self.b
        if bank is None or a is None or b is None:  # pragma: no cover - set by _start
            raise RuntimeError("not started")
        n, width = bank.shape
        if x is None:
            stats = torch.zeros(n * n + n * width + 2, dtype=torch.float64, device=bank.device)
        else:
            x = x.to(bank.device, torch.float32)
            negative = torch.zeros(1, device=x.device) if self.signed else (x < 0).sum().reshape(1).float()
            self._keep(x)
            codes = solve_codes(x, bank, sweeps=self.sweeps)
            stats = torch.cat(
                [
                    (codes.T @ codes).flatten(),
                    (codes.T @ x).flatten(),
                    negative,
                    torch.ones(1, device=x.device),
                ]
            ).double()
        stats = all_sum(stats, self.merge)
        if float(stats[-2]) > 0:  # every rank sees the sum: every rank refuses at the same step
            raise SignedRowsError(int(stats[-2]))
        if float(stats[-1]) == 0.0:
            return False
        self.steps += 1
        keep = (1.0 - 1.0 / self.steps) ** self.forget
        a.mul_(keep).add_(stats[: n * n].view(n, n))
        b.mul_(keep).add_(stats[n * n : -2].view(n, width))
        self.bank = _bank_step(bank, a.float(), b.float(), signed=self.signed)
        return True


def _bank_step(bank: Tensor, a: Tensor, b: Tensor, *, signed: bool) -> Tensor:
    """One block coordinate sweep over the bank's rows (Mairal's dictionary update), in the unit ball."""
    bank = bank.clone()
    for j in range(bank.shape[0]):
        if float(a[j, j]) <= _TINY:
            continue  # an unused concept: left where it is
        row = bank[j] + (b[j] - a[j] @ bank) / a[j, j]
        if not signed:
            row = row.clamp(min=0)
        bank[j] = row / max(1.0, float(row.norm()))
    return bank
