"""Model fields shared across apps."""

from django.db import models

from portal import crypto


class EncryptedTextField(models.TextField):
    """A text column stored encrypted (Fernet) so that a database dump does not reveal it.

    Python code sees plaintext; the database column only ever holds the token.
    """

    def from_db_value(self, value, expression, connection):
        if value is None or value == "":
            return value
        return crypto.decrypt(value)

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        if value is None or value == "":
            return value
        return crypto.encrypt(value)
