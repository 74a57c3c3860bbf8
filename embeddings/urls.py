"""Routes of the embeddings API."""

urlpatterns: list = []
