"""Geodesic shadow service."""
