"""lorentzcore: the analog-forecasting core of Geodesic (pure numerics, no I/O but artifacts)."""
