"""Which `provider:model` deployments answer, remembered for a service's life: a 401/403/404
marks one unusable (one warning, no further calls), a success marks it usable."""

from __future__ import annotations

from ...log import get_logger
from ...providers.base import ProviderError
from .models import EmbeddingError

logger = get_logger(__name__)

# Errors meaning "this provider:model cannot be used" (missing deployment/model, bad key).
INVALID_DEPLOYMENT_STATUSES = frozenset({401, 403, 404})


def is_invalid_deployment(error: ProviderError) -> bool:
    return error.status_code in INVALID_DEPLOYMENT_STATUSES


class Deployments:
    def __init__(self, provider_name: str):
        self.provider_name = provider_name
        self._valid: dict[str, bool] = {}
        self._errors: dict[str, ProviderError] = {}

    def known(self, model: str) -> bool | None:
        """True (answered), False (refused), None (not probed yet)."""
        return self._valid.get(model)

    def mark_valid(self, model: str) -> None:
        self._valid.setdefault(model, True)

    def mark_invalid(self, model: str, error: ProviderError) -> None:
        if self._valid.get(model) is False:
            return
        self._valid[model] = False
        self._errors[model] = error
        logger.warning(
            "skipping invalid deployment %s:%s for the rest of this service's life: %s",
            self.provider_name,
            model,
            error.message,
        )

    def invalid_error(self, model: str, raw_call_id: int | None = None) -> EmbeddingError:
        error = self._errors.get(model)
        reason = error.message if error else "it failed its probe"
        return EmbeddingError(
            "invalid_deployment",
            f"deployment {self.provider_name}:{model} is not usable: {reason}",
            provider_error=error,
            raw_call_id=raw_call_id,
        )
