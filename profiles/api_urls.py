"""The Segment-compatible tracking API under /v1/."""

from django.urls import path, re_path

from profiles.apis import (
    AliasApi,
    BatchApi,
    GroupApi,
    IdentifyApi,
    PageApi,
    ScreenApi,
    TrackApi,
    unknown_path,
)

app_name = "tracking"

urlpatterns = [
    path("identify", IdentifyApi.as_view(), name="identify"),
    path("track", TrackApi.as_view(), name="track"),
    path("page", PageApi.as_view(), name="page"),
    path("screen", ScreenApi.as_view(), name="screen"),
    path("group", GroupApi.as_view(), name="group"),
    path("alias", AliasApi.as_view(), name="alias"),
    path("batch", BatchApi.as_view(), name="batch"),
    # Segment's analytics.js posts each call to the first letter of its type, and
    # its batches to /b.
    path("i", IdentifyApi.as_view(), name="identify-short"),
    path("t", TrackApi.as_view(), name="track-short"),
    path("p", PageApi.as_view(), name="page-short"),
    path("s", ScreenApi.as_view(), name="screen-short"),
    path("g", GroupApi.as_view(), name="group-short"),
    path("a", AliasApi.as_view(), name="alias-short"),
    path("b", BatchApi.as_view(), name="batch-short"),
    re_path(r"^(?P<path>.*)$", unknown_path, name="unknown"),
]
