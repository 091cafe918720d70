from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class CtiConfig(AppConfig):
    name = "cti"
    verbose_name = _("Customer info (CTI)")
