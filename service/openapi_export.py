"""The API's OpenAPI document as stable text (sorted keys), for `spotlight openapi` and the drift test.

The committed openapi/openapi.json is generated from this, never edited by hand; a test fails
when the live app's spec and the committed file differ.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from spotlight.server.settings import Settings

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "openapi" / "openapi.json"


def openapi_json() -> str:
    """The spec of an app built with default settings (the spec does not depend on settings)."""
    from service.app import create_app

    app = create_app(Settings(redis_url=None, store_url="memory://openapi", api_keys=None, api_keys_file=None))
    return json.dumps(app.openapi(), sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def write_openapi(path: Path = DEFAULT_PATH) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(openapi_json())
    return path


if __name__ == "__main__":
    print(write_openapi(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_PATH))
