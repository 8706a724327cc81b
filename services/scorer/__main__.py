"""`python -m scorer`: run the scorer until SIGTERM."""

import asyncio

from geodesic.runtime.service import configure_logging, load_settings
from scorer.app import build
from scorer.settings import ScorerSettings


def main() -> None:
    settings = load_settings(ScorerSettings, "scorer")
    configure_logging(settings.log_level)
    asyncio.run(build(settings).run_forever())


if __name__ == "__main__":
    main()
