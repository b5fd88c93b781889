"""emflow train stage."""
