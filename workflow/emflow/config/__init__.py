"""emflow config stage."""
