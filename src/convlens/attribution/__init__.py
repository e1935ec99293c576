"""Attribution: targets, the CAM family, saliency and guided methods, faithfulness, evaluation.

Imports :mod:`convlens.core` and :mod:`convlens.errors` only.
"""
