"""Routes of the completions API."""

from django.urls import path

from completions import views

urlpatterns = [
    path("completions", views.create_completion, name="completions"),
    path("chat/completions", views.create_chat_completion, name="chat-completions"),
]
