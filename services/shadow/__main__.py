"""`python -m shadow`: run the shadow until SIGTERM."""

import asyncio

from geodesic.runtime.service import configure_logging
from shadow.app import build
from shadow.settings import ShadowSettings


def main() -> None:
    settings = ShadowSettings()
    configure_logging(settings.log_level)
    asyncio.run(build(settings).run_forever())


if __name__ == "__main__":
    main()
