"""`python -m feature`: run the feature until SIGTERM."""

import asyncio

from feature.app import build
from feature.settings import FeatureSettings
from geodesic.runtime.service import configure_logging, load_settings


def main() -> None:
    settings = load_settings(FeatureSettings, "feature")
    configure_logging(settings.log_level)
    asyncio.run(build(settings).run_forever())


if __name__ == "__main__":
    main()
