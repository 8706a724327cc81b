"""Geodesic feature service."""
