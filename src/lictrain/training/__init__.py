"""lictrain.training."""
