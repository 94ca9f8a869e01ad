"""The persisted step-pipeline engine (DESIGN.md: Postgres is the source of truth)."""
