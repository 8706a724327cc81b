"""Tuning constants of the numerics core, kept in one place so a change is one reviewed diff.

Each constant says what it trades off; the modules import them rather than hard-coding.
"""

from typing import Final

# --- hyperbolic.py -------------------------------------------------------------------------

#: Floor for the acosh argument, ``cosh d >= 1 + ACOSH_CLAMP_EPS``, applied only to an argument
#: that rounding pushed below 1 (``cosh d - 1 < 0``). The cancellation-free distance never
#: produces such a value (it is a sum of squares over a positive denominator), so the clamp
#: only guards callers that form ``cosh d - 1`` from a Minkowski product themselves. An
#: argument of exactly 1 (identical points) is not clamped: d(u, u) stays exactly 0.
ACOSH_CLAMP_EPS: Final[float] = 1e-6

#: Below this value of s = cosh d - 1, acosh(1 + s) is evaluated by its series
#: sqrt(2s) (1 - s/12 + 3s^2/160 - 5s^3/896); the first omitted term is 35 s^4 / 18432, i.e.
#: < 2e-19 relative at the threshold, far below one ulp.
ACOSH_SERIES_THRESHOLD: Final[float] = 1e-4

#: Relative tolerance for the time coordinate of an ambient point against sqrt(1 + |z|^2).
#: Loose enough for float32-lifted points (~6e-8), tight enough to catch a spatial vector, a
#: lower-sheet point or a rescaled point passed by mistake.
SHEET_RTOL: Final[float] = 1e-6

# --- kernels.py ----------------------------------------------------------------------------

#: RBF length scale on d_L; whitened, lifted vectors put typical neighbour distances at O(1).
DEFAULT_RBF_LENGTH_SCALE: Final[float] = 1.0
#: Period of the seasonal kernel in bars: one day of 1-minute bars.
DEFAULT_PERIOD_BARS: Final[float] = 1440.0
#: Length scale of the periodic kernel (dimensionless, on the sin^2 scale).
DEFAULT_PERIODIC_LENGTH_SCALE: Final[float] = 1.0
#: Decay of the locally periodic envelope, in bars: about a week of 1-minute bars.
DEFAULT_LOCAL_LENGTH_SCALE_BARS: Final[float] = 7 * 1440.0
#: Weight-sum floor under which the scorer abstains; each weight is <= 1, so this means
#: "the neighbours together carry less than a thousandth of one perfect analog".
DEFAULT_WEIGHT_FLOOR: Final[float] = 1e-3

#: Initial size of the sin(pi tau / p) table; it doubles on demand.
SIN_CACHE_INITIAL_ENTRIES: Final[int] = 1024
#: Hard cap on the table (8 MiB of float64); larger tau is computed directly and counted as a
#: miss. With an integral period the table never exceeds 2p entries (tau is reduced mod 2p).
SIN_CACHE_MAX_ENTRIES: Final[int] = 1 << 20

# --- metrics.py ----------------------------------------------------------------------------

#: Floor on bin proportions in PSI, so an empty bin contributes a large but finite term
#: (ln(1e-4) ~ -9.2) instead of infinity.
PSI_EPS: Final[float] = 1e-4
#: Default number of reference-quantile bins for PSI (the usual 10 deciles).
PSI_DEFAULT_BINS: Final[int] = 10
#: Reference-quantile grid size of IncrementalKS; its error bound is the largest reference
#: bin mass, ~1 / KS_GRID_BINS for a continuous reference.
KS_GRID_BINS: Final[int] = 1024
#: Default number of equal-width bins for the expected calibration error.
ECE_DEFAULT_BINS: Final[int] = 10
