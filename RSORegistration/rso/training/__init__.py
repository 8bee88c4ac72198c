"""Training the general model (paper Tables 2-3)."""
