from celery import shared_task
from celery_progress.backend import ProgressRecorder

from phone.models import Phonebook
from phone.phonebook import import_contacts


@shared_task(bind=True)
def import_contacts_task(self, book_id: int, text: str) -> dict:
    """A large CSV import, off the request (a `celery worker`, or the embedded worker's threads:
    portal.background); progress is read by the panel (celery-progress).  `text` is the file as
    the view decoded it (phone.phonebook.decode_csv)."""
    book = Phonebook.objects.get(pk=book_id)
    return import_contacts(book, text, progress=ProgressRecorder(self)).as_dict()
