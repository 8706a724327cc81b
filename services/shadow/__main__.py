"""`python -m shadow`: run the shadow until SIGTERM."""

import asyncio

from geodesic.runtime.service import configure_logging, load_settings
from shadow.app import build
from shadow.settings import ShadowSettings


def main() -> None:
    settings = load_settings(ShadowSettings, "shadow")
    configure_logging(settings.log_level)
    asyncio.run(build(settings).run_forever())


if __name__ == "__main__":
    main()
