"""Tiny deterministic components for tests (seed 0, widths 8-32, 1-2 layers, CPU).

One function per component, ``dummy_<component>()``; each builds a fresh, randomly
initialised instance under ``torch.manual_seed(0)`` so two calls give identical weights.
"""

import torch

SEED = 0


def seeded(build):
    """Decorator: run ``build`` under ``torch.manual_seed(SEED)``."""

    def wrapper(*args, **kwargs):
        torch.manual_seed(SEED)
        return build(*args, **kwargs)

    wrapper.__name__ = build.__name__
    wrapper.__doc__ = build.__doc__
    return wrapper
