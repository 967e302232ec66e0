"""lictrain.evaluation."""
