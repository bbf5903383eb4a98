"""The code location: one `defs`, loaded by workspace.yaml."""

import dagster as dg

defs = dg.Definitions(assets=[], resources={})
