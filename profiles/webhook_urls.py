"""Webhooks from the shop and the ESPs."""

urlpatterns: list = []
