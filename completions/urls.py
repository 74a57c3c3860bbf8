"""Routes of the completions API."""

from django.urls import path

from completions import tokenize_views, views

urlpatterns = [
    path("completions", views.create_completion, name="completions"),
    path("chat/completions", views.create_chat_completion, name="chat-completions"),
    path("tokenize", tokenize_views.create_tokenize, name="tokenize"),
    path("detokenize", tokenize_views.create_detokenize, name="detokenize"),
]
