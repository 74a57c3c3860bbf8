"""POST /v1/embeddings: serializer, service, view."""
