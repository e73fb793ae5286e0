#!/usr/bin/env python
"""Write lib/advbound/artifact_index.json: the sha256 of every committed artifact folder's manifests
(book/artifacts/*/manifest.json and witnesses.json).

The package carries this index, so a chapter run where the repository is not (Colab) can fetch the committed
networks and witnesses of the commit it was installed from and check them (advbound.artifacts.fetch_artifacts).
``make artifacts`` and ``make witnesses`` run it; tests/test_artifacts.py checks that it matches book/artifacts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "lib"))

from advbound.artifacts import INDEX, index_artifacts  # noqa: E402


def main() -> int:
    index = index_artifacts(ROOT / "book" / "artifacts")
    INDEX.write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")
    print(f"{INDEX.relative_to(ROOT)}: {len(index)} artifact folders")
    return 0


if __name__ == "__main__":
    sys.exit(main())
