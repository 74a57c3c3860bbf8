"""Routes of OpenAI's Usage API (under /v1/)."""

from django.urls import path

from ledger import views

urlpatterns = [
    path("organization/usage/completions", views.usage_completions, name="usage-completions"),
    path("organization/usage/embeddings", views.usage_embeddings, name="usage-embeddings"),
]
