"""Risk logic: outcome labelling, win rates, drift and guards (pure, no I/O)."""
