"""Provider credentials: read only from the environment, and scrubbed from anything we print or store."""

from __future__ import annotations

import logging
import os


SECRET_ENV_VARS = ("PIXVERSE_API_KEY", "AIMLAPI_KEY", "USEAPI_TOKEN", "FAL_KEY")


def redact(text: str) -> str:
    """Replace every known secret value in `text` with '***'."""
    for var in SECRET_ENV_VARS:
        value = os.environ.get(var, "").strip()
        if len(value) >= 4:
            text = text.replace(value, "***")
    return text


class RedactingFilter(logging.Filter):
    """Installed on our log handler so no record can carry a key to stderr."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        return True
