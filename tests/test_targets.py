"""Targets of an explanation (src/convlens/targets.py): checked before work, scored in the same forward."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

import convlens as cl
from convlens.core.targets import (
    callable_scores,
    check_target,
    class_scores,
    row_indices,
    take_target,
    target_scores,
)
from helpers import exact

#: Two samples, four classes, every entry distinct: row i, class j holds 10*i + j.
LOGITS = torch.tensor([[0.0, 1.0, 3.0, 2.0], [13.0, 10.0, 11.0, 12.0]])


def _as_list(target: Tensor | None) -> list[int]:
    assert target is not None
    assert target.dtype == torch.int64
    assert target.dim() == 1
    out: list[int] = target.tolist()
    return out


# -- check_target ---------------------------------------------------------------------------------


def test_none_and_callables_are_decided_later() -> None:
    assert check_target(None, 2, (2, 4)) is None
    assert check_target(lambda out: out[:, 0], 2, (2, 4)) is None
    assert check_target(torch.Tensor.sum, 2, None) is None


@pytest.mark.parametrize(
    ("target", "n", "expected"),
    [
        (3, 2, [3, 3]),
        (np.int64(2), 3, [2, 2, 2]),
        ([3, 0], 2, [3, 0]),
        ((1, 2, 0), 3, [1, 2, 0]),
        ([np.int32(1), 2], 2, [1, 2]),
        (torch.tensor(1), 2, [1, 1]),
        (torch.tensor([0, 3]), 2, [0, 3]),
        (torch.tensor([2, 1], dtype=torch.int32), 2, [2, 1]),
        (np.array([1, 2]), 2, [1, 2]),
        (np.array(3), 2, [3, 3]),
    ],
)
def test_class_targets_become_one_int64_index_per_sample(target: Any, n: int, expected: list[int]) -> None:
    assert _as_list(check_target(target, n, (n, 4))) == expected
    assert _as_list(check_target(target, n, None)) == expected  # unknown output: no upper bound


def test_a_reversed_numpy_array_is_a_target_like_any_other() -> None:
    top = np.argsort(np.array([0.1, 0.9]))[::-1]  # a negative stride
    assert _as_list(check_target(top, 2, (2, 4))) == [1, 0]


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("cat", "target must be None, an int, a list or tensor of ints, or a callable; got str 'cat'."),
        (b"cat", "target must be None, an int, a list or tensor of ints, or a callable; got bytes b'cat'."),
        (True, "target must be None, an int, a list or tensor of ints, or a callable; got True."),
        (2.0, "target must be None, an int, a list or tensor of ints, or a callable; got float."),
        ({0: 1}, "target must be None, an int, a list or tensor of ints, or a callable; got dict."),
        ([1, 2.0], "a target list must hold ints; got [1, 2.0]."),
        ([True, 1], "a target list must hold ints; got [True, 1]."),
        (["a", "b"], "a target list must hold ints; got ['a', 'b']."),
        (torch.tensor([1.0, 2.0]), "a target tensor must hold class indices (integers); got dtype torch.float32."),
        (torch.tensor(1.0), "a target tensor must hold class indices (integers); got dtype torch.float32."),
        (torch.tensor([True, False]), "a target tensor must hold class indices (integers); got dtype torch.bool."),
        (np.array([0.5, 1.0]), "a target tensor must hold class indices (integers); got dtype torch.float64."),
    ],
)  # fmt: skip
def test_targets_of_the_wrong_type_are_refused(target: Any, message: str) -> None:
    with pytest.raises(cl.InvalidTypeError, match=exact(message)) as info:
        check_target(target, 2, (2, 4))
    assert isinstance(info.value, TypeError)


@pytest.mark.parametrize(
    ("target", "count"), [([1, 2, 3], 3), ([1], 1), (torch.tensor([0, 1, 2]), 3), (np.array([1]), 1)]
)
def test_a_target_of_the_wrong_length_is_refused(target: Any, count: int) -> None:
    message = f"target has {count} entries for a batch of 2; give one per sample."
    with pytest.raises(cl.InvalidArgumentError, match=exact(message)) as info:
        check_target(target, 2, (2, 4))
    assert isinstance(info.value, ValueError)


def test_a_target_past_the_known_classes_is_refused() -> None:
    message = "target 10 is out of range: the model gives 10 scores per sample (0 to 9)."
    with pytest.raises(cl.InvalidArgumentError, match=exact(message)):
        check_target(10, 1, (1, 10))
    with pytest.raises(cl.InvalidArgumentError, match=exact(message.replace("10 is", "12 is"))):
        check_target([3, 12], 2, (2, 10))
    assert _as_list(check_target(9, 1, (1, 10))) == [9]  # the last class is fine


def test_the_upper_bound_needs_a_known_two_dimensional_output() -> None:
    assert _as_list(check_target(100, 1, None)) == [100]
    assert _as_list(check_target(100, 1, (1, 10, 5))) == [100]  # not (N, classes): no bound


def test_a_negative_target_is_refused_with_and_without_a_known_output() -> None:
    with pytest.raises(cl.InvalidArgumentError, match=exact("target -1 is out of range: below 0.")):
        check_target(-1, 1, None)
    with pytest.raises(cl.InvalidArgumentError, match=exact("target -2 is out of range: below 0.")):
        check_target(torch.tensor([0, -2]), 2, (2, 10, 5))
    message = "target -1 is out of range: the model gives 4 scores per sample (0 to 3)."
    with pytest.raises(cl.InvalidArgumentError, match=exact(message)):
        check_target([0, -1], 2, (2, 4))


# -- class_scores, callable_scores, target_scores -------------------------------------------------------


def test_class_scores_gathers_each_samples_entry() -> None:
    scores = class_scores(LOGITS, torch.tensor([2, 0]))
    assert scores.tolist() == [3.0, 13.0]
    assert class_scores(LOGITS, torch.tensor([3, 3])).tolist() == [2.0, 12.0]


def test_class_scores_keep_the_graph_to_the_output() -> None:
    logits = LOGITS.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(class_scores(logits, torch.tensor([1, 2])).sum(), logits)
    assert grad.tolist() == [[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]


@pytest.mark.parametrize(
    ("output", "got"),
    [(torch.zeros(2, 4, 3), "(2, 4, 3)"), (torch.zeros(2), "(2,)"), ({"logits": LOGITS}, "dict"), ((LOGITS,), "tuple")],
)  # fmt: skip
def test_class_scores_refuse_outputs_that_are_not_n_by_classes(output: Any, got: str) -> None:
    message = (
        f"class targets need a model output of shape (N, classes); got {got}. Pass target= a callable "
        "that returns one score per sample."
    )
    with pytest.raises(cl.InvalidArgumentError, match=exact(message)) as info:
        class_scores(output, torch.tensor([0, 1]))
    assert isinstance(info.value, ValueError)


def test_class_scores_refuse_an_index_past_the_classes() -> None:
    message = "target 4 is out of range: the model gives 4 scores per sample (0 to 3)."
    with pytest.raises(cl.InvalidArgumentError, match=exact(message)):
        class_scores(LOGITS, torch.tensor([1, 4]))


def test_callable_scores_checks_one_score_per_sample() -> None:
    scores = callable_scores(lambda out: out[:, 1] - out[:, 0], LOGITS, 2)
    assert scores.tolist() == [1.0, -3.0]
    with pytest.raises(cl.InvalidArgumentError, match=exact(
        "a target callable must return one score per sample, shape (2,); got (2, 1)."
    )):  # fmt: skip
        callable_scores(lambda out: out[:, :1], LOGITS, 2)
    with pytest.raises(cl.InvalidArgumentError, match=exact(
        "a target callable must return one score per sample, shape (2,); got ()."
    )):  # fmt: skip
        callable_scores(lambda out: out.sum(), LOGITS, 2)
    with pytest.raises(cl.InvalidArgumentError, match=exact(
        "a target callable must return one score per sample, shape (2,); got float."
    )):  # fmt: skip
        callable_scores(lambda out: 1.0, LOGITS, 2)  # type: ignore[arg-type,return-value]


def test_target_scores_none_is_the_argmax_of_the_same_output() -> None:
    logits = LOGITS.clone().requires_grad_(True)
    targets, scores = target_scores(logits, None, None, 2)
    assert _as_list(targets) == [2, 0]
    assert scores.tolist() == [3.0, 13.0]
    (grad,) = torch.autograd.grad(scores.sum(), logits)  # the scores are of this forward's output
    assert grad.tolist() == [[0.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]]


def test_target_scores_with_fixed_targets() -> None:
    fixed = check_target([1, 3], 2, (2, 4))
    targets, scores = target_scores(LOGITS, [1, 3], fixed, 2)
    assert _as_list(targets) == [1, 3]
    assert scores.tolist() == [1.0, 12.0]


def test_target_scores_with_a_callable() -> None:
    targets, scores = target_scores(LOGITS, lambda out: out.max(dim=1).values * 2, None, 2)
    assert targets is None
    assert scores.tolist() == [6.0, 26.0]


def test_target_scores_none_refuses_an_output_without_classes() -> None:
    with pytest.raises(cl.InvalidArgumentError, match=re.escape("got (2, 4, 3). Pass target= a callable")):
        target_scores(torch.zeros(2, 4, 3), None, None, 2)


# -- the target of other rows: ScoreTarget.take --------------------------------------------


class Second(cl.ScoreTarget):
    def __call__(self, output: Any) -> Tensor:
        scores: Tensor = output[:, 1]
        return scores


def test_a_score_target_the_same_for_every_sample_takes_any_rows_as_itself() -> None:
    target = Second()
    assert target.take(torch.tensor([0, 0, 5])) is target
    assert take_target(target, [1]) is target


def test_take_target_keeps_plain_callables_and_class_targets() -> None:
    def score(out: Tensor) -> Tensor:
        return out[:, 0]

    assert take_target(score, torch.tensor([1, 1])) is score
    assert take_target(3, [0]) == 3
    assert take_target(None, slice(0, 1)) is None


@pytest.mark.parametrize(
    ("rows", "n", "expected"),
    [
        (torch.tensor([2, 2, 0]), 3, [2, 2, 0]),
        ([1, -1], 3, [1, 2]),
        (np.array([0, 1]), 2, [0, 1]),
        (slice(1, None), 3, [1, 2]),
        (torch.tensor([], dtype=torch.int64), 3, []),
    ],
)
def test_row_indices(rows: Any, n: int, expected: list[int]) -> None:
    assert row_indices(rows, n) == expected


@pytest.mark.parametrize(
    ("rows", "error", "message"),
    [
        ([3], cl.InvalidArgumentError, "row 3 is out of range for a batch of 2 (0 to 1)."),
        ([-3], cl.InvalidArgumentError, "row -3 is out of range for a batch of 2 (0 to 1)."),
        (
            torch.tensor([0.0]),
            cl.InvalidTypeError,
            "rows must be integer indices; got a torch.float32 tensor",
        ),
        ([True], cl.InvalidTypeError, "rows must be integer indices; got True."),
        (1, cl.InvalidTypeError, "rows must be a slice or integer indices; got int."),
    ],
)
def test_row_indices_refuses_rows_outside_the_batch_and_non_indices(
    rows: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=re.escape(message)):
        row_indices(rows, 2)
