from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class PortalConfig(AppConfig):
    name = "portal"
    verbose_name = _("Portal")

    def ready(self):
        from django.conf import settings

        from portal.crypto import check_keys

        # Refuse to start with a malformed SIP_PASSWORD_KEY rather than fail at the first call.
        check_keys(list(settings.SIP_PASSWORD_KEYS))
