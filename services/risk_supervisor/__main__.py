"""`python -m risk_supervisor`: run the risk_supervisor until SIGTERM."""

import asyncio

from geodesic.runtime.service import configure_logging, load_settings
from risk_supervisor.app import build
from risk_supervisor.settings import RiskSettings


def main() -> None:
    settings = load_settings(RiskSettings, "risk-supervisor")
    configure_logging(settings.log_level)
    asyncio.run(build(settings).run_forever())


if __name__ == "__main__":
    main()
