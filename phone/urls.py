from django.urls import path

from phone.views import history, page, phonebook, settings

app_name = "phone"

urlpatterns = [
    path("", page.index, name="index"),
    path("history/", history.history, name="history"),
    path("history/export.csv", history.history_export, name="history_export"),
    path("settings/", settings.settings_panel, name="settings"),
    path("settings/account/", settings.save_account, name="settings_account"),
    path("settings/cti/", settings.save_cti, name="settings_cti"),
    path("settings/buttons/", settings.save_buttons, name="settings_buttons"),
    path("settings/dnd/", settings.save_dnd, name="settings_dnd"),
    path("pad/", settings.external_pad, name="external_pad"),
    path("phonebook/", phonebook.phonebook, name="phonebook"),
    path("phonebook/<int:book_id>/new/", phonebook.contact_new, name="contact_new"),
    path("phonebook/<int:book_id>/export.csv", phonebook.phonebook_export, name="phonebook_export"),
    path("phonebook/<int:book_id>/import/", phonebook.phonebook_import, name="phonebook_import"),
    path(
        "phonebook/<int:book_id>/import/<str:task_id>/",
        phonebook.phonebook_import_progress,
        name="phonebook_import_progress",
    ),
    path("contacts/<int:pk>/", phonebook.contact_row, name="contact_row"),
    path("contacts/<int:pk>/edit/", phonebook.contact_edit, name="contact_edit"),
    path("contacts/<int:pk>/delete/", phonebook.contact_delete, name="contact_delete"),
]
