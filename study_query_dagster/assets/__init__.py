"""Software-defined assets and their checks (the Dagster layer)."""

import warnings

# Two features we use are marked preview/beta in Dagster 1.13: checks partitioned like their
# assets (a result per prompt set in the UI) and `observable_source_asset` (the legacy v1
# database). The exact pin in pyproject.toml guards against their changes.
warnings.filterwarnings("ignore", message=".*partitions_def on an AssetCheckSpec.*")
warnings.filterwarnings("ignore", message=".*`observable_source_asset` is currently in beta.*")
