"""Baselines to compare the layer-wise LP against: gradient descent on the latent.

`gradient_descent(generator, x, ...)` inverts a `layerinv.Network` or any PyTorch module
mapping (B, k) to (B, ...) by batched gradient descent on z with random restarts, an optional
prior weight, the sign flip of Huang, Hand, Heckel and Voroninski, per-sample early stopping
and an optional measurement y = A(x). It returns the same `Inversion` as `layerinv.invert`.

`PRESETS` holds named defaults, each with its source:

- 'bora2017' (the default): Adam, lr 0.01, 1000 steps, 10 restarts, the settings of the CSGM
  MNIST scripts (Bora, Jalal, Price and Dimakis, ICML 2017).
- 'hand2017': plain gradient steps with the sign flip (Hand and Voroninski 2017; Huang et al.
  2018).

Any option given to `gradient_descent` overrides the preset's. See `layerinv._gradient` for the
loss, the seeding rules and the statuses; `refine` runs the 'lp+gd' method (gradient steps
from the LP's answer).
"""

from __future__ import annotations

from layerinv._gradient import GD_STATUSES, PRESETS, gradient_descent, refine

__all__ = ["GD_STATUSES", "PRESETS", "gradient_descent", "refine"]
