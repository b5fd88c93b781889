"""emflow generate stage."""
