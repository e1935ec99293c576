"""Nonnegative matrix factorization over a dataset, fitted on a rank-invariant sample of positions.

The activations of a layer at every position of every example are the rows of ``X`` (``P x C``,
``P`` as large as the data). The bank ``W`` (``n x C``) and the coefficients ``U >= 0`` (``P x n``)
minimize ``||X - U W||_F^2``; for ``"nmf"`` the bank is nonnegative too, for ``"semi-nmf"`` it is
signed. ``X`` is never held: blocks of rows arrive one at a time, each row with its *id* (for a
layer, ``example * positions + position``: where it sits in the data), and the fit keeps a uniform
sample of at most ``SAMPLE_VALUES`` values by priority sampling: every row gets a key from a seeded
hash of its id (:func:`priorities`), and the rows of the lowest keys are kept. The bank is then
fitted on the sample alone, from two starts (NNDSVD, and ``n`` rows of the sample drawn by the
seed: NMF has local minima), each by alternations of the coefficients (HALS: coordinate descent on
each concept's column, clamped at 0) and the bank (block coordinate steps on ``U^T U`` and
``U^T X``, each row kept inside the unit ball, as in Mairal et al.'s dictionary update); the one
that explains the sample better is kept, and an unused concept restarts where it explains least.

The sample is a function of the rows and their ids only, not of the order they arrive in, nor of
how the data is split: under ``torchrun`` each rank keeps its own lowest keys, the ranks gather
them and keep the lowest of all (sorted by key, then id: one canonical order), and every rank fits
the same bank from the same sample with the same arithmetic. The bank is bit-identical for 1, 2 or
3 ranks when the rows are (and the intra-op thread counts match: a float sum may be split otherwise
by more threads). Negative rows of a nonnegative fit are counted over the ranks block by block, so
every rank refuses at the same block.

References:
    Mairal, Bach, Ponce, Sapiro, "Online Learning for Matrix Factorization and Sparse Coding", JMLR 2010.
    https://www.jmlr.org/papers/v11/mairal10a.html
    Cichocki and Phan, "Fast local algorithms for large scale nonnegative matrix and tensor
    factorizations" (HALS), IEICE 2009.
    Duffield, Lund, Thorup, "Priority sampling for estimation of arbitrary subset sums", JACM 2007.

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> truth = torch.rand(3, 8, generator=g)
    >>> x = torch.rand(600, 3, generator=g) @ truth
    >>> nmf = StreamingNMF(3, signed=False, merge=False, seed=0)
    >>> bank = nmf.fit(blocks(x, 100))
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

from convlens.core.distributed import all_sum, merge_top
from convlens.errors import InvalidArgumentError

__all__ = [
    "CODE_SWEEPS",
    "POLISH_EPOCHS",
    "SAMPLE_ROWS",
    "SAMPLE_VALUES",
    "SignedRowsError",
    "StreamingNMF",
    "blocks",
    "priorities",
    "solve_codes",
]

#: HALS sweeps over the concepts when solving for the coefficients of a block of rows.
CODE_SWEEPS = 12

#: How many activation values (rows x channels) the uniform sample of positions holds: 8 MiB of
#: float32, whatever the data's size ...
SAMPLE_VALUES = 2**21

#: ... and at most this many rows (positions).
SAMPLE_ROWS = 2**15

#: Alternations of coefficients and bank over the sample.
POLISH_EPOCHS = 40

_TINY = 1e-12
_WORD = 0xFFFFFFFF
_KEY_BITS = 52  # keys are exact in float64 (merge_top ranks float64 values)


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


def blocks(x: Tensor, rows: int) -> Iterator[tuple[Tensor, Tensor]]:
    """The rows of ``x`` (``(P, C)``), ``rows`` at a time, each block with its rows' ids (``0 .. P-1``).

    Example:
        >>> [(tuple(b.shape), i.tolist()) for b, i in blocks(torch.zeros(3, 2), 2)]
        [((2, 2), [0, 1]), ((1, 2), [2])]
    """
    ids = torch.arange(len(x), device=x.device)
    yield from zip(torch.split(x, rows), torch.split(ids, rows), strict=True)


def priorities(ids: Tensor, seed: int) -> Tensor:
    """Each row's sampling key: a seeded hash of its id (int64 ``>= 0``), uniform on ``[0, 2**52)``.

    The same id and seed give the same key on every rank and device; the rows of the lowest keys
    are a uniform sample. Integer arithmetic only (MurmurHash3's 32-bit finalizer, its products
    split so no int64 overflows).

    Example:
        >>> keys = priorities(torch.arange(4), seed=0)
        >>> keys.dtype, bool(((keys >= 0) & (keys < 2**52)).all()), len(set(keys.tolist()))
        (torch.int64, True, 4)
    """
    ids = ids.to(torch.int64)
    low, high = ids & _WORD, (ids >> 32) & _WORD
    words = [(seed >> shift) & _WORD for shift in (0, 32)]
    halves = []
    for salt in (0x9E3779B9, 0x7F4A7C15):  # two independent 32-bit hashes
        start = int(_mix32(_mix32(torch.tensor(words[0] ^ salt)) ^ words[1]))  # the seed's own word
        halves.append(_mix32(low ^ _mix32(high ^ start)))
    return (halves[0] << (_KEY_BITS - 32)) | (halves[1] >> (64 - _KEY_BITS))


def _mix32(x: Tensor) -> Tensor:
    """MurmurHash3's finalizer on 32-bit words held in int64."""
    x = x ^ (x >> 16)
    x = _times(x, 0x85EBCA6B)
    x = x ^ (x >> 13)
    x = _times(x, 0xC2B2AE35)
    return x ^ (x >> 16)


def _times(x: Tensor, factor: int) -> Tensor:
    """``x * factor mod 2**32`` for 32-bit words in int64, in 16-bit halves: no product reaches 2**63."""
    return ((x & 0xFFFF) * factor + (((x >> 16) * factor) & 0xFFFF) * 65536) & _WORD


class SignedRowsError(InvalidArgumentError):
    """Negative values in the rows of a nonnegative fit, counted over every rank (all raise it).

    ``convlens.concepts`` raises it with the layer named and the fix; a caller that can fall back to
    ``method="semi-nmf"`` catches it by type.
    """

    def __init__(self, count: int, message: str | None = None) -> None:
        super().__init__(message or f"{count} negative values in the rows of a nonnegative fit")
        self.count = count


class StreamingNMF:
    """A concept bank fitted in one pass over blocks of rows, from a fixed-size sample of them.

    Args:
        n: How many concepts.
        signed: A signed bank (semi-NMF); False keeps the bank nonnegative (NMF).
        merge: The ranks read different rows (``torchrun``): gather their samples, sum the refusal's counts.
        seed: Seeds the rows' keys (:func:`priorities`): which rows the sample holds.
        sweeps: HALS sweeps for the coefficients of the first alternation.
        device: Where the sample lives on a rank that reads no rows (the others keep their rows'
            device): the model's, so that every rank fits with the same arithmetic.
    """

    def __init__(
        self,
        n: int,
        *,
        signed: bool,
        merge: bool,
        seed: int,
        sweeps: int = CODE_SWEEPS,
        device: torch.device | str = "cpu",
    ) -> None:
        self.n, self.signed, self.merge, self.seed = n, signed, merge, seed
        self.sweeps, self.device = sweeps, torch.device(device)
        self.epochs = POLISH_EPOCHS
        self.sample: Tensor | None = None  # (rows, C) float32: the rows of lowest key so far
        self.keys: Tensor | None = None  # their keys, ascending (ties: ascending ids)
        self.ids: Tensor | None = None
        self.seen = 0  # rows this rank has read
        self.bank: Tensor | None = None

    def fit(self, source: Iterable[tuple[Tensor, Tensor]]) -> Tensor:
        """Fit on the blocks ``source`` yields (``(rows, C)`` and their ``(rows,)`` int64 ids); the ``(n, C)`` bank.

        Ids must be distinct across the blocks of every rank (a row's place in the data). Rows of
        the bank that end up unused (all zero) are left zero. Every rank must call it (with its own
        blocks, possibly none).

        Raises:
            SignedRowsError: A negative value in a block of any rank, for a nonnegative fit (every
                rank raises it, at the same block).
        """
        it = iter(source)
        while True:
            block = next(it, None)
            if not self._count(None if block is None else block[0]):
                break
            if block is not None:
                self._keep(*block)
        self._gather()
        sample = self.sample
        if sample is None:  # pragma: no cover - _gather sets it
            raise RuntimeError("no sample")
        best, lowest = self._alternate(self._nndsvd(sample))
        bank, loss = self._alternate(self._drawn(sample))
        if loss < lowest:  # NMF has local minima: the better of two starts
            best, lowest = bank, loss
        revived = self._revive(best)
        if revived is not None:  # a concept went unused: it restarts where the bank explains least
            bank, loss = self._alternate(revived)
            if loss <= lowest:
                best = bank
        self.bank = best
        return best

    def _count(self, x: Tensor | None) -> bool:
        """The refusal, block by block on every rank at once; False once every rank is done."""
        negative = 0.0 if x is None or self.signed else float((x < 0).sum())
        counts = all_sum(torch.tensor([negative, float(x is not None)], dtype=torch.float64), self.merge)
        if float(counts[0]) > 0:  # every rank sees the sum: every rank refuses at the same block
            raise SignedRowsError(int(counts[0]))
        return float(counts[1]) > 0

    def _capacity(self, width: int) -> int:
        """How many rows the sample holds for rows of ``width`` channels (the same on every rank)."""
        return max(min(SAMPLE_VALUES // max(width, 1), SAMPLE_ROWS), 16 * self.n)

    def _keep(self, x: Tensor, ids: Tensor) -> None:
        """Priority sampling: the rows of lowest key so far, among the kept ones and ``x``'s."""
        x = x.detach().float() + 0.0  # + 0.0: a -0.0 becomes 0.0, as the gather's sum would make it
        ids = ids.to(x.device, torch.int64)
        keys = priorities(ids, self.seed)
        capacity = self._capacity(x.shape[1])
        self.seen += len(x)
        if self.sample is not None and self.keys is not None and self.ids is not None:
            if len(self.keys) >= capacity:  # full: only a key at most the largest kept can enter
                enter = keys <= self.keys[-1]
                x, ids, keys = x[enter], ids[enter], keys[enter]
            x, ids, keys = (
                torch.cat([self.sample, x]),
                torch.cat([self.ids, ids]),
                torch.cat([self.keys, keys]),
            )
        order = _canonical(keys, ids)[:capacity]
        self.sample, self.ids, self.keys = x[order], ids[order], keys[order]

    def _gather(self) -> None:
        """Every rank's sample merged into the lowest keys of all, in the canonical order, on every rank."""
        sample, keys, ids = self.sample, self.keys, self.ids
        mine = torch.tensor([0.0 if sample is None else sample.shape[1], float(sample is not None)])
        sizes = all_sum(mine.double(), self.merge)  # every rank with rows has the same width
        width = round(float(sizes[0]) / max(float(sizes[1]), 1.0))
        if sample is None or keys is None or ids is None:
            sample = torch.zeros(0, width, device=self.device)
            keys = ids = torch.zeros(0, dtype=torch.int64, device=self.device)
        if not self.merge:
            self.sample, self.keys, self.ids = sample, keys, ids
            return
        capacity = self._capacity(width)
        values, positions, _ = merge_top((-keys.double())[None], ids[None], [], capacity, True)
        wanted = positions[0].to(sample.device)
        # Each wanted row is held by one rank, which contributes it; the others add zeros (exact).
        rows = torch.zeros(len(wanted), width, dtype=torch.float64, device=sample.device)
        by_id = torch.argsort(wanted)
        held = torch.isin(ids, wanted)
        slots = by_id[torch.searchsorted(wanted[by_id], ids[held])]
        rows[slots] = sample[held].double()
        self.sample = all_sum(rows, True).float()
        self.keys, self.ids = (-values[0]).to(torch.int64).to(sample.device), wanted

    def _revive(self, bank: Tensor) -> Tensor | None:
        """The bank with each unused (all-zero) row set to a sample row the bank explains worst; None: none unused."""
        dead = bank.norm(dim=1) <= _TINY
        sample = self.sample
        if not bool(dead.any()) or sample is None or not len(sample):
            return None
        residual = (sample - solve_codes(sample, bank, sweeps=self.sweeps) @ bank).norm(dim=1)
        worst = torch.argsort(residual, descending=True, stable=True)[: int(dead.sum())]
        rows = sample[worst] if self.signed else sample[worst].clamp(min=0)
        rows = rows / rows.norm(dim=1, keepdim=True).clamp(min=_TINY)
        chosen = torch.zeros_like(bank)
        chosen[dead.nonzero().flatten()[: len(rows)]] = rows
        return torch.where(dead[:, None], chosen, bank)

    def _alternate(self, bank: Tensor) -> tuple[Tensor, float]:
        """``epochs`` alternations over the sample from ``bank``; the bank and its squared error on the sample."""
        sample = self.sample
        if sample is None or not len(sample):
            return bank, 0.0
        codes = None
        for _ in range(self.epochs):  # warm: two sweeps from the last epoch's coefficients
            codes = solve_codes(sample, bank, sweeps=2 if codes is not None else self.sweeps, start=codes)
            a, b = codes.T @ codes, codes.T @ sample
            for _ in range(3):
                bank = _bank_step(bank, a, b, signed=self.signed)
        codes = solve_codes(sample, bank, sweeps=2 if codes is not None else self.sweeps, start=codes)
        return bank, float((sample - codes @ bank).double().square().sum())

    def _drawn(self, rows: Tensor) -> Tensor:
        """A start from the data itself: the first ``n`` nonzero rows of the sample, at unit length.

        The sample's order is its keys': these are ``n`` positions drawn at random (by ``seed``).
        """
        live = rows[rows.norm(dim=1) > _TINY][: self.n]
        start = live if self.signed else live.clamp(min=0)
        bank = torch.zeros(self.n, rows.shape[1], dtype=torch.float32, device=rows.device)
        bank[: len(start)] = start / start.norm(dim=1, keepdim=True).clamp(min=_TINY)
        return bank

    def _nndsvd(self, rows: Tensor) -> Tensor:
        """NNDSVD (Boutsidis and Gallopoulos, 2008) of ``rows``: an ``(n, C)`` bank.

        The top ``n`` right singular vectors ``v_j`` of the rows come from their Gram matrix; each
        concept is the positive or the negative part of ``v_j`` (for semi-NMF, ``v_j`` or ``-v_j``),
        whichever carries more of the rows (the norms of ``u_j = X v_j`` split by sign).
        """
        rows = rows.double()
        values, vectors = torch.linalg.eigh(rows.T @ rows)  # ascending
        order = torch.argsort(values, descending=True, stable=True)[: self.n]
        vectors = vectors[:, order].T  # (n, C), largest first
        u = rows @ vectors.T  # (rows, n)
        up = vectors.clamp(min=0).norm(dim=1) * u.clamp(min=0).square().sum(0).sqrt()
        down = (-vectors).clamp(min=0).norm(dim=1) * u.clamp(max=0).square().sum(0).sqrt()
        sign = torch.where(up >= down, 1.0, -1.0).to(vectors)[:, None]
        start = sign * vectors if self.signed else (sign * vectors).clamp(min=0)
        start = start / start.norm(dim=1, keepdim=True).clamp(min=_TINY)
        bank = torch.zeros(self.n, rows.shape[1], dtype=torch.float32, device=rows.device)
        bank[: len(start)] = start.float()
        return bank


def _canonical(keys: Tensor, ids: Tensor) -> Tensor:
    """The order of the rows by key, ties by id: the same on every rank whatever order they came in."""
    by_id = torch.sort(ids, stable=True).indices
    return by_id[torch.sort(keys[by_id], stable=True).indices]


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
