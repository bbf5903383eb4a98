"""study_query_dagster: study how LLMs answer queries, as a Dagster project."""

__version__ = "0.1.0"
