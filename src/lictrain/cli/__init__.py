"""lictrain.cli."""
