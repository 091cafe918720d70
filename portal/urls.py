from django.contrib import admin
from django.urls import include, path

from portal import views

urlpatterns = [
    path("login/", views.login_view, name="login"),
    path("logout/", views.logout_view, name="logout"),
    path("i18n/", include("django.conf.urls.i18n")),
    path("admin/", admin.site.urls),
    path("cti/", include("cti.urls")),
    path("", include("phone.urls")),
]
