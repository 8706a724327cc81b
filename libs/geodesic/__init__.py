"""Shared Geodesic packages: contracts, embedded stack, service runtime, control plane, CLI."""
