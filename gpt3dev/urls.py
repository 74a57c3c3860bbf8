"""Root URLs: the OpenAI API under /v1/ (and vLLM's /tokenize, /detokenize, /rerank and
/score at the root, Cohere's /v2/rerank), health probes, Prometheus metrics, the playground
and the admin."""

from django.contrib import admin
from django.urls import include, path

from completions import tokenize_views
from gpt3dev import views
from observability.metrics import metrics_view
from rerank import views as rerank_views

admin.site.site_header = "gpt3dev administration"
admin.site.site_title = "gpt3dev admin"
admin.site.index_title = "Model registry and server"

urlpatterns = [
    path("v1/", include("models_api.urls")),
    path("v1/", include("completions.urls")),
    path("v1/", include("embeddings.urls")),
    path("v1/", include("rerank.urls")),
    path("v1/", include("responses.urls")),
    path("v1/", include("ledger.urls")),
    # vLLM's, Jina's and Cohere's clients also call these outside /v1/.
    path("", include("rerank.urls")),
    path("v2/rerank", rerank_views.create_rerank, name="rerank"),
    path("tokenize", tokenize_views.create_tokenize, name="tokenize"),
    path("detokenize", tokenize_views.create_detokenize, name="detokenize"),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("playground/", include("playground.urls")),
    path("admin/", admin.site.urls),
]
