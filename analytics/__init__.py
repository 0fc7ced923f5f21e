"""DuckDB sink loop, schema, views and reports over anonymised metrics. No Kafka in here."""
