"""AlphaGo's policy network as the lecture describes it (re-exported by :mod:`convlens.models.zoo`)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from convlens.core.checks import check_int

__all__ = ["AlphaGoPolicy", "PositionBias", "alphago_policy"]


class PositionBias(nn.Module):
    """Add a separate learned bias at every spatial position.

    Args:
        height: Rows of the map.
        width: Columns of the map.

    Shape:
        Input ``(N, 1, height, width)``; output the same.

    Example:
        >>> import torch
        >>> PositionBias(19, 19)(torch.zeros(2, 1, 19, 19)).shape
        torch.Size([2, 1, 19, 19])
    """

    def __init__(self, height: int, width: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, 1, height, width))

    def forward(self, x: Tensor) -> Tensor:
        """Add the per-position bias."""
        return x + self.bias


class AlphaGoPolicy(nn.Module):
    """AlphaGo's policy network as Silver et al. (2016) and the lecture describe it.

    A ``19x19x48`` stack of feature planes is zero padded to ``23x23`` and
    convolved with ``k`` 5x5 filters (ReLU); hidden layers 2 to 12 each pad to
    ``21x21`` and convolve ``k`` 3x3 filters (ReLU); the last layer convolves
    one 1x1 filter, adds a different bias at each of the 361 positions and
    applies a softmax over the moves. No pooling: every layer stays 19x19.

    Args:
        k: Filters per hidden layer (192 in the match version; 128, 256 and
            384 in Extended Data Table 3).
        planes: Input feature planes.
        board: Board size.

    Shape:
        Input ``(N, planes, board, board)``; output ``(N, board * board)``
        move probabilities.

    References:
        Silver et al., "Mastering the game of Go with deep neural networks and
        tree search", Nature 529 (2016). https://doi.org/10.1038/nature16961

    Example:
        >>> import torch
        >>> net = AlphaGoPolicy(k=8)
        >>> probs = net(torch.zeros(2, 48, 19, 19)).detach()
        >>> probs.shape, [round(float(s), 4) for s in probs.sum(dim=1)]
        (torch.Size([2, 361]), [1.0, 1.0])
    """

    def __init__(self, k: int = 192, *, planes: int = 48, board: int = 19) -> None:
        super().__init__()
        k, planes, board = check_int("k", k, 1), check_int("planes", planes, 1), check_int("board", board, 1)
        #: The input of one position, read by convlens's NeuronVisualizer when no size is given.
        self.input_shape = (1, planes, board, board)
        layers: list[nn.Module] = [nn.Conv2d(planes, k, 5, padding=2), nn.ReLU(inplace=True)]
        for _ in range(11):
            layers += [nn.Conv2d(k, k, 3, padding=1), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Conv2d(k, 1, 1, bias=False)
        self.position_bias = PositionBias(board, board)
        self.flatten = nn.Flatten()
        self.softmax = nn.Softmax(dim=1)

    def forward(self, x: Tensor) -> Tensor:
        """Move probabilities, one per board point."""
        out = self.position_bias(self.head(self.features(x)))
        return self.softmax(self.flatten(out))  # type: ignore[no-any-return]


def alphago_policy(k: int = 192) -> AlphaGoPolicy:
    """AlphaGo's policy network with ``k`` filters per hidden layer (see :class:`AlphaGoPolicy`).

    Example:
        >>> sum(p.numel() for p in alphago_policy(192).parameters())
        3882793
    """
    return AlphaGoPolicy(k)
