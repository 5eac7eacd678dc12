"""The lmdock market: catalogue, blob store, search index and the gRPC service."""
