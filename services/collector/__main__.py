"""`python -m collector`: run the collector until SIGTERM."""

from collector.app import CollectorService
from geodesic.runtime.service import serve

if __name__ == "__main__":
    serve(CollectorService)
