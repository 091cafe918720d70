from django.urls import path

from cti import api, views

app_name = "cti"

urlpatterns = [
    path("popup/", views.popup, name="popup"),
    path("api/dial/", api.dial, name="api_dial"),
    path("crm/customers/", views.customers, name="customers"),
    path("crm/customers/new/", views.customer_edit, name="customer_new"),
    path("crm/customers/<int:pk>/", views.customer_edit, name="customer_edit"),
    path("crm/directory/", views.directory, name="directory"),
    path("crm/receptions/", views.receptions, name="receptions"),
    path("crm/receptions/new/", views.reception_new, name="reception_new"),
]
