from django.urls import path

from phone import views, views_history, views_phonebook

app_name = "phone"

urlpatterns = [
    path("", views.index, name="index"),
    path("history/", views_history.history, name="history"),
    path("history/export.csv", views_history.history_export, name="history_export"),
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
