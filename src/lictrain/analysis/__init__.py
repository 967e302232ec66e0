"""lictrain.analysis."""
