"""The kubelet device plugin: which devices a node advertises, how they are allocated, and the gRPC server."""
