"""What the operator configures: the config file and where a caller's identity comes from."""
