from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.utils.translation import gettext as _

from phone.models import ParkGroup
from phone.pad import pad_for
from portal.access import get_active_sip_account, get_profile, scoped

KEYPAD = [(str(n), f"key-{n}") for n in (1, 2, 3, 4, 5, 6, 7, 8, 9)] + [
    ("*", "key-star"),
    ("0", "key-0"),
    ("#", "key-hash"),
]


@login_required
def index(request):
    """The phone page (seed 3-1)."""
    profile = get_profile(request.user)
    account = get_active_sip_account(request.user)
    group = scoped(ParkGroup, request.user).filter(members=request.user).first()
    return render(
        request,
        "phone/index.html",
        {
            "profile": profile,
            "account": account,
            "park_group": group,
            # Six buttons always, as on the seed's phone; those beyond the group's size are off.
            "park_slots": [(n, group is not None and n <= group.slot_count) for n in range(1, 7)],
            "keypad": KEYPAD,
            "line_buttons": pad_for(request.user),
            "ice_servers": settings.ICE_SERVERS,
            "labels": {
                "idle": _("Idle"),
                "dialing": _("Connecting"),
                "ringing": _("Ringing"),
                "incall": _("In call"),
                "held": _("On hold"),
                "registered": _("Registered"),
                "registering": _("Registering"),
                "failed": _("Registration failed"),
                "reconnecting": _("Reconnecting"),
                "worker_lost": _("Phone service not responding"),
                "incoming_to": _("Call to"),
            },
        },
    )
