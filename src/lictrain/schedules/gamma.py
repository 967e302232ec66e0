"""Gamma schedules for the balanced rate-distortion optimiser.

The balanced optimiser weighs its task gradients with logits that decay by ``gamma`` each
step; these schedulers move ``gamma`` over training. Five strategies (section 1 of the phase 2
implementation guide), with ``t`` the epoch, ``T = total_epochs``, ``g0 = initial_gamma`` and
``gf = final_gamma``:

* ``linear``: ``g0 - (g0 - gf) * t / T``
* ``cosine``: ``gf + 0.5 * (g0 - gf) * (1 + cos(pi * t / T))``
* ``step``: ``g0 * gamma_decay ** (number of step_epochs <= t)``
* ``adaptive``: multiply gamma by ``gamma_decay`` when the loss plateaus (relative
  improvement over the last ``window_size`` losses below ``threshold``), at most one cut per
  window, never below ``gf``, never up.
* ``hpcm``: three phases with boundaries ``P1 = T/10`` and ``P2 = 2T/3`` (300 and 2000 at
  ``T = 3000``): warm-up ``g0 * (1 + 0.2 t/P1)``, scaling ``g0 * 1.2 * (1 - 0.5 p)``,
  refinement ``g0 * 0.7 * (1 - 0.3 p)`` with ``p`` the progress through the phase. Ignores
  ``gf``, as in the guide.

``step`` and ``hpcm`` do not use ``final_gamma``; ``linear``, ``cosine`` and ``adaptive``
need ``final_gamma <= initial_gamma`` (gamma only decays).

A scheduler writes the gamma it computes into its optimiser: an object with a writable
``gamma`` attribute (lictrain's ``BalancedOptimizer``), a torch optimiser whose param groups
carry a ``"gamma"`` key (each group's is set), or ``None`` (compute only).
:class:`MultiScaleGammaScheduler` runs one schedule per task group and hands the optimiser one
gamma per task (the guide's "multi-scale adaptive gamma").

Layout: this module is the public entry point and only re-exports. Strategy names, defaults
and setting checks live in :mod:`lictrain.schedules.gamma_settings`, the schedulers in
:mod:`lictrain.schedules.gamma_scheduler`, :class:`MultiScaleGammaScheduler` in
:mod:`lictrain.schedules.multiscale` and the builders in
:mod:`lictrain.schedules.gamma_builders`; none of them imports this module.
"""

from __future__ import annotations

from lictrain.schedules.gamma_builders import build_gamma_scheduler, gamma_scheduler_from_args
from lictrain.schedules.gamma_scheduler import AdaptiveGammaScheduler, HPCMGammaScheduler
from lictrain.schedules.gamma_settings import (  # noqa: F401 (re-exported)
    DEFAULT_GAMMA_DECAY,
    DEFAULT_STEP_EPOCHS,
    DEFAULT_THRESHOLD,
    DEFAULT_WINDOW_SIZE,
    STRATEGIES,
)
from lictrain.schedules.multiscale import MultiScaleGammaScheduler

__all__ = [
    "STRATEGIES",
    "AdaptiveGammaScheduler",
    "HPCMGammaScheduler",
    "MultiScaleGammaScheduler",
    "build_gamma_scheduler",
    "gamma_scheduler_from_args",
]
