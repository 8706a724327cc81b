"""`python -m collector`: run the collector until SIGTERM."""

import asyncio

from collector.app import build
from collector.settings import CollectorSettings
from geodesic.runtime.service import configure_logging, load_settings


def main() -> None:
    settings = load_settings(CollectorSettings, "collector")
    configure_logging(settings.log_level)
    asyncio.run(build(settings).run_forever())


if __name__ == "__main__":
    main()
