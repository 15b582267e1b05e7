"""Alignment losses: global video-music contrastive (symmetric InfoNCE) and video-beat alignment.

Each loss returns a dict of named scalar terms; the training task adds them up with the
recipe's weights. The exact formulas are in the module docstrings and ``docs/losses.md``.
"""

from .beat_alignment import BeatAlignmentLoss, resample_envelope, smooth_envelope, tolerance_kernel
from .contrastive import ContrastiveLoss, InfoNCELoss, gather_with_grad, retrieval_recall

__all__ = [
    "BeatAlignmentLoss",
    "ContrastiveLoss",
    "InfoNCELoss",
    "gather_with_grad",
    "resample_envelope",
    "retrieval_recall",
    "smooth_envelope",
    "tolerance_kernel",
]
