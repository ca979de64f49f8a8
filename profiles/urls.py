"""Marketer pages about profiles, imports and data sources."""

from django.urls import path

from profiles.views import imports, people, schema, sources

urlpatterns = [
    path("", people.profile_list, name="profile_list"),
    path("<int:pk>/", people.profile_detail, name="profile_detail"),
    path("<int:pk>/merge/", people.profile_merge_page, name="profile_merge"),
    path("sources/", sources.sources_health_page, name="sources_health"),
    path("sources/keys/", sources.source_keys, name="source_keys"),
    path(
        "sources/keys/<int:pk>/revoke/",
        sources.source_key_revoke,
        name="source_key_revoke",
    ),
    path("traits/", schema.trait_list, name="trait_list"),
    path("traits/new/", schema.trait_edit, name="trait_new"),
    path("traits/<int:pk>/", schema.trait_edit, name="trait_edit"),
    path("traits/<int:pk>/delete/", schema.trait_delete, name="trait_delete"),
    path(
        "traits/<int:pk>/convert/",
        schema.trait_values_convert,
        name="trait_values_convert",
    ),
    path("imports/", imports.import_list, name="import_list"),
    path("imports/<int:pk>/", imports.import_detail, name="import_detail"),
    path("imports/<int:pk>/mapping/", imports.import_mapping, name="import_mapping"),
    path(
        "imports/<int:pk>/progress.json",
        imports.import_progress,
        name="import_progress",
    ),
    path("imports/<int:pk>/retry/", imports.import_retry, name="import_retry"),
    path("imports/<int:pk>/discard/", imports.import_discard, name="import_discard"),
    path(
        "imports/<int:pk>/rejections.csv",
        imports.import_rejections_csv,
        name="import_rejections_csv",
    ),
]
