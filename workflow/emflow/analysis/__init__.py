"""emflow analysis stage."""
