"""`python -m scorer`: run the scorer until SIGTERM."""

import asyncio

from geodesic.runtime.service import configure_logging
from scorer.app import build
from scorer.settings import ScorerSettings


def main() -> None:
    settings = ScorerSettings()
    configure_logging(settings.log_level)
    asyncio.run(build(settings).run_forever())


if __name__ == "__main__":
    main()
