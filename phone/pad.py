"""The external-line pad (外線パッド, seed 6-1) as the page shows it."""

from dataclasses import dataclass

from phone.models import LineButton
from portal.models import SipAccount

_VM_KINDS = {
    LineButton.Kind.VM_START: ("start", "vm-start-btn"),
    LineButton.Kind.VM_STOP: ("stop", "vm-stop-btn"),
    LineButton.Kind.VM_STATUS: ("status", "vm-status-btn"),
}


@dataclass(frozen=True)
class PadButton:
    kind: str
    testid: str
    number: str
    label: str


def pad_buttons(buttons, account: SipAccount | None) -> list[PadButton]:
    """Number line and one-touch buttons 1..N per kind (line-btn-N, onetouch-btn-N); voicemail
    buttons without a number dial the tenant's feature code for the user's extension."""
    counters = {LineButton.Kind.LINE: 0, LineButton.Kind.ONE_TOUCH: 0}
    result = []
    for button in buttons:
        if button.kind in counters:
            counters[button.kind] += 1
            prefix = "line-btn" if button.kind == LineButton.Kind.LINE else "onetouch-btn"
            testid = f"{prefix}-{counters[button.kind]}"
            number = button.number
        else:
            code_kind, testid = _VM_KINDS[button.kind]
            number = button.number
            if not number and account is not None:
                number = account.tenant.feature_code(code_kind, account.extension)
        label = button.label or number or button.get_kind_display()
        result.append(PadButton(kind=button.kind, testid=testid, number=number, label=label))
    return result


def pad_for(user) -> list[PadButton]:
    """The user's pad: the tenant's shared buttons and the user's own, in position order."""
    from django.db.models import Q

    from portal.access import get_active_sip_account, scoped

    buttons = (
        scoped(LineButton, user)
        .filter(Q(user=user) | Q(user__isnull=True))
        .order_by("position", "user_id", "id")
    )
    return pad_buttons(buttons, get_active_sip_account(user))
