"""Top-level URLs: the marketer UI, the tracking API, webhooks, sign-in and the admin."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("v1/", include("profiles.api_urls")),
    path("webhooks/", include("profiles.webhook_urls")),
    # The ESPs' tracking webhooks: /anymail/<esp>/tracking/ (campaigns/tracking.py).
    path("anymail/", include("campaigns.webhook_urls")),
    path("profiles/", include("profiles.urls")),
    path("segments/", include("segments.urls")),
    path("", include("campaigns.urls")),
]
