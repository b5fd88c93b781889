"""emflow judge stage."""
