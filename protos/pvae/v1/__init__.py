"""pvae.v1: generated gRPC stubs for the pvae.v1 service contract (see pvae.proto)."""
