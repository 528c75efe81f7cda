"""Cross-request state: the in-process and Redis/Valkey-backed `DualCache`."""
