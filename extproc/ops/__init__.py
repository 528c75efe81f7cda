"""Running the sidecar: the gRPC server, hot reload, worker processes."""
