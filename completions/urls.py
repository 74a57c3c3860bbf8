"""Routes of the completions API."""

urlpatterns: list = []
