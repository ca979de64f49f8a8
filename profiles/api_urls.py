"""The Segment-compatible tracking API under /v1/."""

urlpatterns: list = []
