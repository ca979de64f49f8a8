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
    re_path(r"^(?P<path>.*)$", unknown_path, name="unknown"),
]
