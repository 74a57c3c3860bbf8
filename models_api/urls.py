"""Routes of the registry's API."""

from django.urls import path

from models_api import views

urlpatterns = [
    path("models", views.list_models, name="list-models"),
    path("models/<path:model_id>", views.retrieve_model, name="retrieve-model"),
]
