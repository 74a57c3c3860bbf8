"""Routes of the Responses API."""

from django.urls import path

from responses import views

urlpatterns = [
    path("responses", views.create_response, name="responses"),
    path("responses/input_tokens", views.count_input_tokens, name="responses-input-tokens"),
    path("responses/<str:response_id>", views.response_detail, name="response-detail"),
    path("responses/<str:response_id>/cancel", views.cancel_response, name="response-cancel"),
    path("responses/<str:response_id>/input_items", views.input_items, name="response-input-items"),
]
