"""`python -m shadow`: run the shadow scorer until SIGTERM."""

from geodesic.runtime.service import serve
from shadow.app import ShadowService

if __name__ == "__main__":
    serve(ShadowService)
