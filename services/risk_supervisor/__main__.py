"""`python -m risk_supervisor`: run the risk_supervisor until SIGTERM."""

import asyncio

from geodesic.runtime.service import configure_logging
from risk_supervisor.app import build
from risk_supervisor.settings import RiskSettings


def main() -> None:
    settings = RiskSettings()
    configure_logging(settings.log_level)
    asyncio.run(build(settings).run_forever())


if __name__ == "__main__":
    main()
