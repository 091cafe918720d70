from django.contrib import admin
from django.urls import include, path

from portal import health, turn, views

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("healthz/live", health.healthz_live, name="healthz-live"),
    path("metrics", health.metrics_view, name="metrics"),
    path("ice-servers", turn.ice_servers_view, name="ice-servers"),
    path("login/", views.login_view, name="login"),
    path("logout/", views.logout_view, name="logout"),
    path("i18n/", include("django.conf.urls.i18n")),
    path("admin/", admin.site.urls),
    path("cti/", include("cti.urls")),
    path("", include("phone.urls")),
]
