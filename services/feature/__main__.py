"""`python -m feature`: run the feature service until SIGTERM."""

from feature.app import FeatureService
from geodesic.runtime.service import serve

if __name__ == "__main__":
    serve(FeatureService)
