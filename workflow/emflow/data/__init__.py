"""emflow data stage."""
