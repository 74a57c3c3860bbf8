"""Routes of the embeddings API."""

from django.urls import path

from embeddings import views

urlpatterns = [path("embeddings", views.create_embeddings, name="embeddings")]
