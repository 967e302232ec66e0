"""lictrain.search."""
