"""Export the JSON Schema of every contract to schemas/ for executors in other languages.

Run `python -m geodesic.contracts.export` after changing a model; a test fails while the
checked-in files and the models disagree.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from geodesic.contracts.models import MODELS

SCHEMA_DIR = Path(__file__).resolve().parents[3] / "schemas"


def render_schemas() -> dict[str, str]:
    return {
        f"{name}.json": json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n"
        for name, model in MODELS.items()
    }


def main(out_dir: Path = SCHEMA_DIR) -> int:
    out_dir.mkdir(parents=True, exist_ok=True)
    for filename, text in render_schemas().items():
        (out_dir / filename).write_text(text)
    print(f"wrote {len(MODELS)} schemas to {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
