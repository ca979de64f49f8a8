"""Marketer pages about profiles, imports and data sources."""

from django.urls import path

from profiles.views import imports, people

urlpatterns = [
    path("", people.profile_list, name="profile_list"),
    path("<int:pk>/", people.profile_detail, name="profile_detail"),
    path("imports/", imports.import_list, name="import_list"),
    path("imports/<int:pk>/", imports.import_detail, name="import_detail"),
    path(
        "imports/<int:pk>/rejections.csv",
        imports.import_rejections_csv,
        name="import_rejections_csv",
    ),
]
