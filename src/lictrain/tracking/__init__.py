"""lictrain.tracking."""
