"""The Envoy edge: the ext_proc gRPC transport (protobuf stays here) and generated Envoy configs."""
