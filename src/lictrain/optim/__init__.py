"""lictrain.optim: balanced rate-distortion optimisation and (cautious) Adam."""

from lictrain.optim.balanced import METHODS, UPDATE_MODES, BalancedOptimizer
from lictrain.optim.cautious_adam import adam_update_, cautious_mask

__all__ = ["BalancedOptimizer", "METHODS", "UPDATE_MODES", "adam_update_", "cautious_mask"]
