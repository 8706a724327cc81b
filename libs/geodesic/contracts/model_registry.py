"""Where signed models live: the directory the trainer writes and the services read.

Declared once for the writers (``geodesic train``, the bootstrap model of ``geodesic up``),
the readers (scorer, shadow and risk supervisor, through ``RegistrySettings``) and the CLI.
A light module (pathlib only), so the CLI can name the default in its help text without
importing the training pipeline. Model ids (the registry's directory names) are defined
by ``lorentzcore.model.MODEL_ID_PATTERN``.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DEFAULT_MODEL_REGISTRY", "ENV_MODEL_REGISTRY"]

#: The variable that points every reader and writer at the registry.
ENV_MODEL_REGISTRY = "GEODESIC_MODEL_REGISTRY"
#: The registry when nothing else is said, relative to the working directory.
DEFAULT_MODEL_REGISTRY = Path("models/registry")
