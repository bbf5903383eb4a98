"""Software-defined assets and their checks (the Dagster layer)."""

import warnings

# Checks are partitioned like their assets so the UI shows a result per prompt set. That is a
# preview feature in Dagster 1.13; the exact pin in pyproject.toml guards against its changes.
warnings.filterwarnings("ignore", message=".*partitions_def on an AssetCheckSpec.*")
