from django.urls import path

from phone import views, views_history, views_phonebook, views_settings

app_name = "phone"

urlpatterns = [
    path("", views.index, name="index"),
    path("history/", views_history.history, name="history"),
    path("history/export.csv", views_history.history_export, name="history_export"),
    path("settings/", views_settings.settings_panel, name="settings"),
    path("settings/account/", views_settings.save_account, name="settings_account"),
    path("settings/cti/", views_settings.save_cti, name="settings_cti"),
    path("settings/buttons/", views_settings.save_buttons, name="settings_buttons"),
    path("pad/", views_settings.external_pad, name="external_pad"),
    path("phonebook/", views_phonebook.phonebook, name="phonebook"),
    path("phonebook/<int:book_id>/new/", views_phonebook.contact_new, name="contact_new"),
    path(
        "phonebook/<int:book_id>/export.csv",
        views_phonebook.phonebook_export,
        name="phonebook_export",
    ),
    path(
        "phonebook/<int:book_id>/import/",
        views_phonebook.phonebook_import,
        name="phonebook_import",
    ),
    path(
        "phonebook/<int:book_id>/import/<str:task_id>/",
        views_phonebook.phonebook_import_progress,
        name="phonebook_import_progress",
    ),
    path("contacts/<int:pk>/", views_phonebook.contact_row, name="contact_row"),
    path("contacts/<int:pk>/edit/", views_phonebook.contact_edit, name="contact_edit"),
    path("contacts/<int:pk>/delete/", views_phonebook.contact_delete, name="contact_delete"),
]
