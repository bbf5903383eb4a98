"""Dagster resources, and `build_resources(settings)` that makes all of them from `Settings`."""

from .build import build_resources

__all__ = ["build_resources"]
