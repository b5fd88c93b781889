"""emflow demo stage."""
