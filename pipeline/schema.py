"""`make schema`: writes docs/manifest.schema.json, the JSON Schema of each delivered job's manifest.json,
from the typed models in pipeline.stages.handoff (a test keeps the committed file equal to it)."""

from __future__ import annotations

import json
from pathlib import Path

from .stages.handoff import manifest_schema

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "docs" / "manifest.schema.json"


def manifest_schema_text() -> str:
    return json.dumps(manifest_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> None:
    SCHEMA_PATH.write_text(manifest_schema_text(), encoding="utf-8")
    print(SCHEMA_PATH)


if __name__ == "__main__":
    main()
