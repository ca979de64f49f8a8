"""Marketer pages for segments and the builder's JSON API."""

from django.urls import path

from segments import apis, views

urlpatterns = [
    path("", views.segment_list, name="segment_list"),
    path("new/", views.segment_new, name="segment_new"),
    path("<int:pk>/", views.segment_edit, name="segment_edit"),
    path("api/preview", apis.RulePreviewApi.as_view(), name="segment_preview_api"),
    path("api/explain", apis.RuleExplainApi.as_view(), name="segment_explain_api"),
]
