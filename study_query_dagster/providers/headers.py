"""What a server's response headers say about waiting: `Retry-After` (and `retry-after-ms`) and
the quota headers OpenAI and Azure send (`x-ratelimit-limit-*`, `x-ratelimit-remaining-*`,
`x-ratelimit-reset-*`, for requests and for tokens)."""

from __future__ import annotations

import email.utils
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# "1s", "6m0s", "20ms", "1h2m3.5s", "0.5s" (OpenAI's reset format), or plain seconds.
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: Any) -> float | None:
    """Seconds from OpenAI's reset format or a plain number; None when unreadable."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if (seconds := _finite(text)) is not None:
        return max(seconds, 0.0)
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(number) * _UNIT_S[unit] for number, unit in parts)


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `Retry-After` (seconds or an HTTP date).
    Anything else (garbage, NaN, infinity) is ignored: the normal backoff applies then."""
    if not headers:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    if (seconds := _finite(lowered.get("retry-after-ms"))) is not None:
        return max(seconds / 1000.0, 0.0)
    value = lowered.get("retry-after")
    if (seconds := _finite(value)) is not None:
        return max(seconds, 0.0)
    if value:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(when.timestamp() - time.time(), 0.0)
    return None


@dataclass(frozen=True)
class RateLimit:
    """The quota a response reported; None for what the server did not say. Resets are
    seconds from when the response was sent."""

    limit_requests: float | None = None
    remaining_requests: float | None = None
    reset_requests_s: float | None = None
    limit_tokens: float | None = None
    remaining_tokens: float | None = None
    reset_tokens_s: float | None = None

    def to_dict(self) -> dict[str, float | None]:
        return {
            "limit_requests": self.limit_requests,
            "remaining_requests": self.remaining_requests,
            "reset_requests_s": self.reset_requests_s,
            "limit_tokens": self.limit_tokens,
            "remaining_tokens": self.remaining_tokens,
            "reset_tokens_s": self.reset_tokens_s,
        }


def parse_rate_limit(headers: Mapping[str, str] | None) -> RateLimit | None:
    """The `x-ratelimit-*` headers as a `RateLimit`, or None when there are none."""
    if not headers:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    if not any(k.startswith("x-ratelimit-") for k in lowered):
        return None
    limit = RateLimit(
        limit_requests=_count(lowered.get("x-ratelimit-limit-requests")),
        remaining_requests=_count(lowered.get("x-ratelimit-remaining-requests")),
        reset_requests_s=parse_duration(lowered.get("x-ratelimit-reset-requests")),
        limit_tokens=_count(lowered.get("x-ratelimit-limit-tokens")),
        remaining_tokens=_count(lowered.get("x-ratelimit-remaining-tokens")),
        reset_tokens_s=parse_duration(lowered.get("x-ratelimit-reset-tokens")),
    )
    return limit if any(v is not None for v in limit.to_dict().values()) else None


def _count(value: Any) -> float | None:
    number = _finite(value)
    return None if number is None else max(number, 0.0)


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
