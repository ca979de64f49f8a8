"""Webhooks from the shop and the ESPs."""

from django.urls import path

from profiles.webhooks import shopify_webhook

urlpatterns = [
    path("shopify", shopify_webhook, name="shopify_webhook"),
]
