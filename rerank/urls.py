"""Routes of the reranking API (mounted under /v1/, and at the root in gpt3dev.urls)."""

from django.urls import path

from rerank import views

urlpatterns = [
    path("rerank", views.create_rerank, name="rerank"),
    path("score", views.create_score, name="score"),
]
