"""Geodesic risk_supervisor service."""
