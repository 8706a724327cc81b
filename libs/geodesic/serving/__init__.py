"""Serving: loading models by id, and turning scores into signals (shared by scorer/shadow)."""

from geodesic.serving.decision import Decision, decide
from geodesic.serving.models import ModelCache, ModelUnavailableError

__all__ = ["Decision", "ModelCache", "ModelUnavailableError", "decide"]
