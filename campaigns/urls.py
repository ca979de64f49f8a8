"""Marketer pages: dashboard, campaigns, outbox."""

urlpatterns: list = []
