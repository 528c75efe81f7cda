"""`make bench`: load tests of Envoy + the sidecar with h2load (see bench/README.md)."""
