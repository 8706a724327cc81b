"""Geodesic scorer service."""
