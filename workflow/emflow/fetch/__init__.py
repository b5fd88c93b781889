"""emflow fetch stage."""
