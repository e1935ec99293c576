"""The ``convlens`` command.

Example:
    >>> from convlens.cli import main
    >>> main(["layers", "convlens:alphago_policy"])  # doctest: +ELLIPSIS
    name            type         params  leaf
    features        Sequential  3882240  no
    features.0      Conv2d       230592  yes
    ...
    0
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from convlens.errors import ConvlensError, InvalidArgumentError
from convlens.layers import list_layers
from convlens.shapes import trace_shapes
from convlens.zoo import create, default_input_size

__all__ = ["main"]

_MODEL_HELP = "torchvision:NAME, convlens:NAME or path/to/file.py:factory"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convlens", description="Look inside PyTorch convolutional networks."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    layers = commands.add_parser("layers", help="list a model's layers and their parameters")
    layers.add_argument("model", help=_MODEL_HELP)
    shapes = commands.add_parser("shapes", help="trace every layer's output shape (no real compute)")
    shapes.add_argument("model", help=_MODEL_HELP)
    shapes.add_argument("--input", help="input size, e.g. 1,3,224,224 (default: the model's usual one)")
    shapes.add_argument("--markdown", action="store_true", help="print a Markdown table")
    return parser


def _input_size(text: str) -> tuple[int, ...]:
    try:
        size = tuple(int(part) for part in text.replace("x", ",").split(","))
    except ValueError:
        raise InvalidArgumentError(
            f"--input must be integers separated by commas, like 1,3,224,224; got {text!r}."
        ) from None
    return size


def _layers_table(spec: str) -> str:
    infos = list_layers(create(spec))
    rows = [("name", "type", "params", "leaf")] + [
        (i.name, i.type, str(i.params), "yes" if i.leaf else "no") for i in infos
    ]
    widths = [max(len(row[c]) for row in rows) for c in range(4)]
    return "\n".join(
        f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}".rstrip() for r in rows
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (2 for a usage or input error)."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "layers":
            print(_layers_table(args.model))
        else:
            size = _input_size(args.input) if args.input else default_input_size(args.model)
            report = trace_shapes(create(args.model), size)
            print(report.to_markdown() if args.markdown else report)
    except (ConvlensError, OSError) as err:
        print(f"convlens: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
