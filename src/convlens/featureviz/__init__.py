"""Feature visualization: objectives, the maximizer, its parameterizations, colour and transforms.

Also neurons and their top examples over a dataset. Imports :mod:`convlens.core`,
:mod:`convlens.models` and :mod:`convlens.errors`.
"""
