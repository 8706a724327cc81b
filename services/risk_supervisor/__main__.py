"""`python -m risk_supervisor`: run the risk supervisor until SIGTERM."""

from geodesic.runtime.service import serve
from risk_supervisor.app import RiskSupervisorService

if __name__ == "__main__":
    serve(RiskSupervisorService)
