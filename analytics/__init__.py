"""DuckDB sink, schema, views and reports over anonymised metrics."""
