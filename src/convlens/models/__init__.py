"""Models and data: the zoo (specs, weights), the digits CNN, AlphaGo's policy net, images.

Picture folders too. Imports :mod:`convlens.core` and :mod:`convlens.errors` only.
"""
