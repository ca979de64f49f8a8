"""Marketer pages about profiles and imports."""

urlpatterns: list = []
