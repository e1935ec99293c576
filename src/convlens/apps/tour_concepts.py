"""The tour's concepts: what the trained digits CNN's last conv layer uses, beyond single units.

The lecture asks "what does a CNN learn?" and answers one unit at a time. :func:`add_item`
answers at the level of concepts: :func:`convlens.concepts` factors the activations of the digits
CNN's last conv layer over the test digits into :data:`N` directions of its channel space, each shown
by :func:`~convlens.apps.concepts_section.concept_section` with its picture
(:func:`~convlens.featureviz.concept_pictures.concept_pictures`), its top digits and its coefficient map
over each; :func:`importance_table` says how much each concept counts for each digit.

The layer is :data:`LAYER`, the ReLU of the last conv layer ``features.3``: its activations are
nonnegative, as NMF needs (the conv's own output is signed). The importance is taken for each test
digit's label (``target="label"``): for the 7s, how much each concept adds to the score of 7.

Example:
    >>> import torch
    >>> from convlens.featureviz.concept_result import ConceptsResult
    >>> result = ConceptsResult(
    ...     bank=torch.eye(2, 16), layer=LAYER, method="nmf", error=0.3, explained=0.9, examples=5,
    ...     indices=torch.zeros(2, 1, dtype=torch.long), strengths=torch.ones(2, 1),
    ...     importance=torch.tensor([[0.5, 0.25], [-0.125, 2.0]]), classes=torch.tensor([3, 7]),
    ...     class_counts=torch.tensor([2, 3]))
    >>> print(importance_table(result))
    | digit | examples | concept 0 | concept 1 | most |
    |---|---:|---:|---:|---:|
    | 3 | 2 | 0.5 | 0.25 | 0 |
    | 7 | 3 | -0.125 | 2 | 1 |
"""

from __future__ import annotations

from torch import nn

from convlens.apps.concepts_section import concept_section
from convlens.apps.page import Item, TourPage
from convlens.core import html
from convlens.core.html import Html
from convlens.featureviz.concept_pictures import concept_pictures
from convlens.featureviz.concept_result import ConceptsResult
from convlens.featureviz.concepts import concepts
from convlens.models import zoo

__all__ = ["CAPTION", "LAYER", "TITLE", "K", "N", "add_item", "call", "importance_table"]

#: The digits CNN's layer the tour factors: the ReLU of its last conv layer, ``features.3``.
LAYER = "features.4"
#: How many concepts, and how many top digits each.
N, K = 6, 6
#: The tour item's title, and the words about its table.
TITLE = "Beyond single units: the concepts of the digits CNN's last conv layer, and what each digit needs"
CAPTION = (
    "The table: each concept's importance for each digit, the mean, over the test digits with that label "
    '(target="label"), of gradient x coefficient summed over the positions (CRAFT\'s estimate); most: the '
    "concept that counts most for that digit."
)


def call(steps: int) -> str:
    """The calls that make the item, as the tour shows them."""
    return (
        f'r = cl.concepts(digits, "{LAYER}", cl.zoo.digits_dataset("test"), {N}, k={K}, target="label")\n'
        f"r.bank.shape, r.explained, r.importance.shape   # ({N}, 16), the variance explained, (10, {N})\n"
        f'concept_pictures(digits, "{LAYER}", r.bank, normalize=None, steps={steps}).image   # one per concept'
    )


def add_item(page: TourPage, model: nn.Module, *, heading: str, steps: int, seed: int) -> ConceptsResult:
    """Fit the digits CNN's concepts over the test digits and put them on the tour's page under ``heading``.

    The section's pictures go to ``page.out / "concepts"``; the importance table is saved as
    ``concepts_digits.md`` too.

    Args:
        page: The tour's page.
        model: The trained digits CNN (:func:`convlens.models.zoo.digits_cnn`).
        heading: The part of the lecture the item belongs to.
        steps: Optimization steps of the concepts' pictures (as the digits units' pictures).
        seed: Seeds the fit and the pictures.

    Returns:
        What :func:`convlens.concepts` returned.
    """
    page.echo(f"7.2 Beyond single units: the digits CNN's concepts at {LAYER}, over the test digits")
    result = concepts(
        model, LAYER, zoo.digits_dataset("test"), N, k=K, target="label", seed=seed, progress=False
    )
    names = [f"digit {d}" for d in range(10)]
    pictures = concept_pictures(model, LAYER, result.bank, normalize=None, steps=steps, seed=seed).image
    section = concept_section(
        result, pictures=pictures.detach().clamp(0, 1).cpu(), class_names=names, folder=page.out / "concepts",
        href="concepts/", level=4,  # under the part's h2 and the item's h3
    )  # fmt: skip
    table = importance_table(result)
    page.save("concepts_digits.md", f"{table}\n\n{CAPTION}")
    section = Html(section + html.element("p", CAPTION))  # under the concepts, above the table it explains
    page.part(heading).items.append(Item(TITLE, call=call(steps), text=table, section=section))
    page.echo(f"  {result.n} concepts explain {result.explained:.1%} of the variance of {LAYER}")
    return result


def importance_table(result: ConceptsResult) -> str:
    """A pipe table: a row per digit (its label's examples, each concept's importance, the largest's index)."""
    concepts_ = range(result.n)
    rows = [
        "| digit | examples | " + " | ".join(f"concept {i}" for i in concepts_) + " | most |",
        "|---|---:|" + "---:|" * result.n + "---:|",
    ]
    if result.importance is None or result.classes is None or result.class_counts is None:
        return "\n".join(rows)
    for row, digit in enumerate(result.classes.tolist()):
        values = result.importance[row].tolist()
        most = max(concepts_, key=lambda i: values[i])
        cells = " | ".join(f"{v:.3g}" for v in values)
        rows.append(f"| {digit} | {int(result.class_counts[row])} | {cells} | {most} |")
    return "\n".join(rows)
