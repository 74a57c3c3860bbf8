"""The model registry: the ModelEntry table, its admin, GET /v1/models, and the
selectors through which every other app reaches a registry entry."""
