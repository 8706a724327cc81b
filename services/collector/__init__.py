"""Geodesic collector service."""
