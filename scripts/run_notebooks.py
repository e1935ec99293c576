"""Execute the lecture's notebooks top to bottom and write the executed copies.

Runs every ``notebooks/*.ipynb`` (or the ones named) in a fresh ``python3``
kernel (ipykernel, from the interpreter that runs this script) with nbclient,
one cell after another with a time limit per cell, and writes each executed
copy, outputs included, to the output folder (default ``docs/_notebooks/``,
gitignored), where the docs build finds and renders them. Prints each
notebook's time. Any error in a cell fails the run: the script names the
notebook and the cell, prints the error, writes no copy of that notebook (and
removes an older one, which would be stale), goes on with the others, and exits 1.

Usage::

    python scripts/run_notebooks.py [OUT] [--timeout SECONDS] [--notebook NAME ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = ROOT / "notebooks"
DEFAULT_OUT = ROOT / "docs" / "_notebooks"
KERNEL = "python3"


def run_notebook(source: Path, out: Path, *, timeout: int) -> str | None:
    """Execute one notebook and write its executed copy to ``out``.

    Returns:
        None when every cell ran, else what went wrong (the cell and its error).
    """
    nb = nbformat.read(source, as_version=4)  # type: ignore[no-untyped-call]
    started: list[int] = []  # the index of each cell as it starts

    def on_cell_start(cell: object, cell_index: int) -> None:
        started.append(cell_index)

    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name=KERNEL,
        # The notebook's own folder is the kernel's working directory, as in Jupyter.
        resources={"metadata": {"path": str(source.parent)}},
        # The kernel's own log (e.g. "running over TCP without encryption" for a kernel on
        # localhost) is not the notebook's business; its cells' warnings still land in the outputs.
        extra_arguments=["--IPKernelApp.log_level=ERROR"],
        on_cell_start=on_cell_start,
    )
    target = out / source.name
    try:
        client.execute()
    except (CellExecutionError, CellTimeoutError, DeadKernelError) as err:
        target.unlink(missing_ok=True)
        if not started:
            return f"{source.name}: the kernel failed before the first cell:\n{err}"
        index = started[-1]
        cell = nb.cells[index]
        first = cell.source.splitlines()[0] if cell.source else ""
        where = f"cell {index + 1} of {len(nb.cells)} (id {cell.id}, {first!r})"
        return f"{source.name}: {where} failed:\n{err}"
    nbformat.write(nb, target)  # type: ignore[no-untyped-call]
    return None


def main(argv: list[str] | None = None) -> int:
    """Run the notebooks; return 0 when all of them ran without an error."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("out", nargs="?", type=Path, default=DEFAULT_OUT, help="default: docs/_notebooks/")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell (default 600)")
    parser.add_argument(
        "--notebook", action="append", default=None, help="a notebook's file name; repeat for more"
    )
    args = parser.parse_args(argv)
    out: Path = args.out
    sources = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
    if args.notebook:
        known = {p.name: p for p in sources}
        unknown = [name for name in args.notebook if name not in known]
        if unknown:
            parser.error(
                f"no such notebook in {NOTEBOOKS_DIR}: {', '.join(unknown)}; have {', '.join(known)}"
            )
        sources = [known[name] for name in args.notebook]
    if not sources:
        print(f"run_notebooks: no notebooks in {NOTEBOOKS_DIR}", file=sys.stderr)
        return 1
    # jupyter_client starts a kernel spec's "python" as this interpreter; a user's own "python3"
    # kernel spec elsewhere could point to another one, so say which.
    command = KernelSpecManager().get_kernel_spec(KERNEL).argv[0]
    major, minor = sys.version_info[:2]
    if command in {"python", f"python{major}", f"python{major}.{minor}"}:
        command = sys.executable
    print(f"kernel {KERNEL}: {command}")
    if Path(command).absolute() != Path(sys.executable).absolute():
        print(f"run_notebooks: warning: that is not this interpreter, {sys.executable}", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    failures = []
    total = time.perf_counter()
    for source in sources:
        start = time.perf_counter()
        failure = run_notebook(source, out, timeout=args.timeout)
        seconds = time.perf_counter() - start
        if failure is None:
            print(f"{source.name}: ran in {seconds:.1f} s -> {out / source.name}", flush=True)
        else:
            print(f"{source.name}: FAILED after {seconds:.1f} s", flush=True)
            print(failure, file=sys.stderr, flush=True)
            failures.append(source.name)
    print(f"{len(sources)} notebooks in {time.perf_counter() - total:.1f} s")
    if failures:
        print(f"run_notebooks: {len(failures)} failed: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
