"""The machinery every primitive shares.

The call recorder (every hook through one ExitStack), the one meta probe, the fast path for
shape-preserving layers, values walking, argument checks, layer addressing, the shape arithmetic
and report, data sharding under torchrun, the HTML writer and the notebook displays. Imports only
:mod:`convlens.errors`.
"""
