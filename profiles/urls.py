"""Marketer pages about profiles and imports."""

from django.urls import path

from profiles import views

urlpatterns = [
    path("", views.profile_list, name="profile_list"),
    path("<int:pk>/", views.profile_detail, name="profile_detail"),
    path("imports/", views.import_list, name="import_list"),
    path("imports/<int:pk>/", views.import_detail, name="import_detail"),
    path(
        "imports/<int:pk>/rejections.csv",
        views.import_rejections_csv,
        name="import_rejections_csv",
    ),
]
