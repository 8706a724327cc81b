"""Settings shared by services that read the model registry (scorer, shadow, risk)."""

from __future__ import annotations

from pydantic import AliasChoices, DirectoryPath, Field

from geodesic.contracts.model_registry import DEFAULT_MODEL_REGISTRY, ENV_MODEL_REGISTRY
from geodesic.runtime.service import ServiceSettings


class RegistrySettings(ServiceSettings):
    registry_root: DirectoryPath = Field(
        default=DEFAULT_MODEL_REGISTRY,
        validate_default=True,  # a typo in the path fails at startup, naming the variable
        validation_alias=AliasChoices(ENV_MODEL_REGISTRY, "registry_root"),
    )


class ModelServingSettings(RegistrySettings):
    """Services that load models and follow the control plane's slots."""

    verify_models: bool = Field(
        default=True,
        description="Refuse models whose signature, file hashes or schema_hash do not match.",
    )
    control_poll_interval_s: float = Field(default=0.5, gt=0)
