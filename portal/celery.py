"""Celery app (design.md §2): webhooks, imports/exports with progress, retention.

Without REDIS_URL tasks run eagerly in the calling process (the embedded default).
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
