"""Celery app (design.md §2): webhooks, imports/exports with progress, retention.

Never eager: with REDIS_URL `celery -A portal worker` processes run the tasks; without it (the
embedded default) a Celery worker in daemon threads of this process does (portal.background).
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# The embedded default's in-process worker starts with the first task queued.
import portal.background  # noqa: E402, F401
