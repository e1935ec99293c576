"""Old spellings that keep working for one release, with a ``DeprecationWarning``.

The one place that renames a keyword: a public function takes the old name as
a keyword-only parameter defaulting to :data:`UNSET` and calls :func:`renamed`,
which warns (pointing at the user's call) and returns the value to use.

Example:
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     renamed("steps", 8, "intervals", 50, default=50)
    8
    >>> print(caught[0].message)
    steps= is deprecated, use intervals= (same meaning); steps= will be removed in the next release.
    >>> renamed("steps", UNSET, "intervals", 50, default=50)
    50
"""

from __future__ import annotations

import enum
import warnings
from typing import Final, TypeVar

from convlens.errors import InvalidArgumentError

__all__ = ["UNSET", "Unset", "deprecated_value", "renamed", "renamed_attribute"]

T = TypeVar("T")


class Unset(enum.Enum):
    """The type of :data:`UNSET`: an old keyword that was not given."""

    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"


#: The default of an old keyword: not given.
UNSET: Final = Unset.UNSET


def renamed(
    old: str, old_value: T | Unset, new: str, new_value: T, *, default: object, stacklevel: int = 3
) -> T:
    """The value of a renamed keyword: the old one (with a warning) if it was given, else the new one.

    Args:
        old: The old keyword's name.
        old_value: What the caller passed for it (:data:`UNSET` if nothing).
        new: The new keyword's name.
        new_value: What the caller passed for the new one (or its default).
        default: The new keyword's default: giving both spellings, the new one not at its default, is
            an error.
        stacklevel: Where the warning points: 3 is the caller of the function that calls this.

    Raises:
        InvalidArgumentError: both spellings given with different values.
    """
    if isinstance(old_value, Unset):
        return new_value
    if new_value not in (default, old_value):
        raise InvalidArgumentError(
            f"{old}= is the old spelling of {new}=; give one of them, not both (got {old}={old_value!r} "
            f"and {new}={new_value!r})."
        )
    warnings.warn(
        f"{old}= is deprecated, use {new}= (same meaning); {old}= will be removed in the next release.",
        DeprecationWarning,
        stacklevel=stacklevel,
    )
    return old_value


def deprecated_value(name: str, value: object, old: str, new: object, *, stacklevel: int = 3) -> None:
    """Warn that ``name=old`` is the old spelling of ``name=new``.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     deprecated_value("target", "predicted", "predicted", None)
        >>> print(caught[0].message)
        target='predicted' is deprecated, use target=None (same meaning); 'predicted' will be removed in the next release.
    """
    if value == old:
        warnings.warn(
            f"{name}={old!r} is deprecated, use {name}={new!r} (same meaning); {old!r} will be removed in the "
            "next release.",
            DeprecationWarning,
            stacklevel=stacklevel,
        )


def renamed_attribute(owner: str, old: str, new: str, *, stacklevel: int = 3) -> None:
    """Warn that ``owner.old`` is the old name of ``owner.new``: call it from the old name's property.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     renamed_attribute("TopExamplesResult", "neuron", "unit")
        >>> print(caught[0].message)
        TopExamplesResult.neuron is deprecated, use .unit (same value); .neuron will be removed in the next release.
    """
    warnings.warn(
        f"{owner}.{old} is deprecated, use .{new} (same value); .{old} will be removed in the next release.",
        DeprecationWarning,
        stacklevel=stacklevel,
    )
