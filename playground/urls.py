"""Route of the playground page (mounted at /playground/)."""

from django.urls import path

from playground import views

urlpatterns = [
    path("", views.playground_page, name="playground"),
]
