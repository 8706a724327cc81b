"""Screenshot an HTML report the way an operator sees it: headless Chromium to a PNG.

    python tools/screenshot_report.py reports/demo/index.html --out /tmp/report.png

Chromium (`apt-get install -y chromium`) runs with no network, no sync and a throw-away
profile; the page is loaded from the file system (its charts are files next to it).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def screenshot(page: Path, out: Path, *, width: int, height: int) -> Path:
    browser = next((b for b in map(shutil.which, BROWSERS) if b), None)
    if browser is None:
        raise SystemExit("no Chromium found: `apt-get install -y chromium`, then run again")
    with tempfile.TemporaryDirectory(prefix="geodesic-shot-") as profile:
        cmd = [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            f"--screenshot={out.resolve()}",
            page.resolve().as_uri(),
        ]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    if not out.exists():
        raise SystemExit(f"Chromium wrote no screenshot to {out}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("page", type=Path, help="the HTML file to render")
    ap.add_argument("--out", type=Path, default=Path("report.png"), help="PNG to write")
    ap.add_argument("--width", type=int, default=1300, help="viewport width in px")
    ap.add_argument("--height", type=int, default=5000, help="viewport height in px (page cut)")
    args = ap.parse_args(argv)
    if not args.page.exists():
        print(f"{args.page} does not exist: run `make demo` (or DEMO_FAST=1 make demo) first")
        return 2
    print(screenshot(args.page, args.out, width=args.width, height=args.height))
    return 0


if __name__ == "__main__":
    sys.exit(main())
