"""One logging set-up for the package.

Module loggers live under `study_query_dagster.*`; Dagster captures them in the UI because the
instance config lists `study_query_dagster` under `python_logs.managed_python_loggers`.
Messages carry timings and ids, never secrets: as a second line of defence every handler
installed here, and every logger from `get_logger`, masks the values of secret-looking
environment variables (`*_API_KEY`, `*_TOKEN`, `*_SECRET`, `*PASSWORD*`).
"""

from __future__ import annotations

import logging
import os
import re

ROOT = "study_query_dagster"
_SECRET_NAME = re.compile(r"(API_KEY|TOKEN|SECRET|PASSWORD)", re.IGNORECASE)
MASK = "***"


def secret_values() -> list[str]:
    """Values of secret-looking environment variables (at least 6 chars, to avoid masking noise)."""
    values = {v.strip() for k, v in os.environ.items() if _SECRET_NAME.search(k) and v}
    return [v for v in values if len(v) >= 6]


def redact(text: str) -> str:
    for value in secret_values():
        text = text.replace(value, MASK)
    return text


class RedactSecretsFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


_FILTER = RedactSecretsFilter()


def get_logger(name: str) -> logging.Logger:
    logger = logging.getLogger(name if name.startswith(ROOT) else f"{ROOT}.{name}")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger


def configure_logging(level: str | int = "INFO") -> None:
    """Console logging for the CLI and scripts (Dagster installs its own handlers)."""
    root = logging.getLogger(ROOT)
    root.setLevel(level)
    if not any(getattr(h, "_sqd", False) for h in root.handlers):
        handler = logging.StreamHandler()
        handler._sqd = True  # type: ignore[attr-defined]
        handler.addFilter(_FILTER)
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
        )
        root.addHandler(handler)
