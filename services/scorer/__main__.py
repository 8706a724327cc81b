"""`python -m scorer`: run the scorer until SIGTERM."""

from geodesic.runtime.service import serve
from scorer.app import ScorerService

if __name__ == "__main__":
    serve(ScorerService)
