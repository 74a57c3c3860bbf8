"""Root URLs: the OpenAI API under /v1/, health probes, Prometheus metrics, the playground
and the admin."""

from django.contrib import admin
from django.urls import include, path

from gpt3dev import views
from gpt3dev.metrics import metrics_view

admin.site.site_header = "gpt3dev administration"
admin.site.site_title = "gpt3dev admin"
admin.site.index_title = "Model registry and server"

urlpatterns = [
    path("v1/", include("models_api.urls")),
    path("v1/", include("completions.urls")),
    path("v1/", include("embeddings.urls")),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("playground/", include("playground.urls")),
    path("admin/", admin.site.urls),
]
