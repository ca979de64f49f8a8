"""Marketer pages: dashboard, campaigns, outbox; and the unsubscribe link."""

from django.urls import path

from campaigns import views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("campaigns/", views.campaign_list, name="campaign_list"),
    path("campaigns/<slug:slug>/", views.campaign_detail, name="campaign_detail"),
    path("campaigns/<slug:slug>/send/", views.campaign_send, name="campaign_send"),
    path("outbox/", views.outbox_list, name="outbox_list"),
    path("outbox/<int:pk>/", views.outbox_detail, name="outbox_detail"),
    # No trailing slash: RFC 8058 forbids answering the one-click POST with a redirect.
    path("u/<str:token>", views.unsubscribe, name="unsubscribe"),
]
