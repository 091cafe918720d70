from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.utils.translation import gettext as _

from phone import presence
from phone.models import ParkGroup, PhoneUserSettings
from phone.pad import pad_for
from portal.access import get_active_sip_account, get_profile, scoped
from portal.turn import page_ice_config

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
            "presence_extensions": presence.lamp_extensions(request.user),
            # 応答不可 as stored (the line confirms it with a `dnd` message on attach).
            "dnd": PhoneUserSettings.objects.filter(user=request.user, dnd=True).exists(),
            # STUN/TURN servers for the page's RTCPeerConnection, TURN with short-lived
            # credentials (portal.turn; never TURN_SECRET itself).
            "ice_servers": page_ice_config(request.user),
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
                # The list of calls (seed 3-3, several calls per user).
                "answer": _("Answer"),
                "reject": _("Reject"),
                "hangup": _("Hang up"),
                "select": _("Act on this call"),
                "consultation": _("Transfer target"),
                "holding": _("Putting on hold…"),
                "resuming": _("Resuming…"),
                "line": _("Line"),
                # {slot}, {caller}, {who} are filled in by the page.
                "parked": _("Parked in {slot}"),
                "park_free": _("Park {slot}: free"),
                "park_parked": _("Park {slot}: {caller} (parked by {who})"),
                "park_mine": _("Park {slot}: {caller} (parked by you)"),
                # Hints when a button cannot act.
                "cannot_dial": _("You cannot dial while a call is ringing or in progress."),
                "enter_number": _("Enter the number first."),
                "hold_first": _("Put the call on hold, enter the number, then press Transfer."),
                "no_call_to_transfer": _("There is no call to transfer."),
                "nothing_to_park": _("There is no call to park."),
                # Colleague lamps (static/phone/presence.js).
                "presence": {
                    "idle": _("Available"),
                    "ringing": _("Ringing"),
                    "busy": _("On the phone"),
                    "dnd": _("Do not disturb"),
                    "offline": _("Offline"),
                },
                # The server's `notice` codes (seed 3-2: why a call failed).
                "notices": {
                    "busy": _("The line is busy"),
                    "no-answer": _("No answer"),
                    "not-found": _("This number does not exist"),
                    "unavailable": _("Cannot connect"),
                    "declined": _("The call was declined"),
                    "failed": _("The call could not be connected"),
                    "hold_refused": _("The call could not be put on hold"),
                    "transfer-failed": _("The transfer failed"),
                    "park-timeout": _("The parked call timed out"),
                    "line-refused": _("This line cannot be used"),
                    "pickup-failed": _("The call could not be picked up"),
                },
                # The server's `error` codes (phone.signalling.schema.ERROR_CODES).
                "errors": {
                    # The page sent something the server does not read (an old page after
                    # an update, most likely): a reload fixes it.
                    **dict.fromkeys(
                        ("bad_json", "too_large", "unknown_type", "bad_field"),
                        _("The page is out of date; reload it"),
                    ),
                    "not_allowed": _("Not allowed"),
                    "no_account": _("No SIP account is set up"),
                    "no_call": _("That call has ended"),
                    "bad_state": _("That is not possible in the call's current state"),
                    "bad_number": _("This number cannot be dialled"),
                    "no_slot": _("There is no such park slot"),
                    "slot_busy": _("That park slot is taken"),
                    "worker_unavailable": _("The phone service is not reachable; try again"),
                    "hold_refused": _("The call could not be put on hold"),
                    "too_long": _("The input is too long"),
                    "internal": _("The server could not do this; the call goes on"),
                    "in_call": _("The line test cannot run during a call."),
                },
            },
        },
    )
