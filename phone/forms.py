from django import forms
from django.core.exceptions import BadRequest
from django.utils.translation import gettext_lazy as _

from phone.models import Contact, LineButton
from phone.numbers import clean_number
from portal.models import SipAccount, validate_extension, validate_hostport

# Longer search text is no search anybody types; it only makes the database work harder.
SEARCH_MAX_CHARS = 200


class SearchForm(forms.Form):
    """A search box (panels, CRM pages): Django's CharField also refuses NUL characters."""

    q = forms.CharField(required=False, max_length=SEARCH_MAX_CHARS)


def search_query(params) -> str:
    """The search text of a request's parameters; BadRequest (400) when it is not acceptable."""
    form = SearchForm(params)
    if not form.is_valid():
        raise BadRequest(" ".join(str(error) for error in form.errors["q"]))
    return form.cleaned_data["q"]


class ContactForm(forms.ModelForm):
    class Meta:
        model = Contact
        fields = ["name", "kana", "number"]
        widgets = {
            "name": forms.TextInput(attrs={"autocomplete": "off"}),
            "kana": forms.TextInput(attrs={"autocomplete": "off"}),
            "number": forms.TextInput(attrs={"inputmode": "tel", "autocomplete": "off"}),
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for field in self.fields.values():
            field.widget.attrs.update(placeholder=field.label, **{"aria-label": field.label})
        for name in self.fields:
            self.fields[name].widget.attrs["data-testid"] = f"contact-input-{name}"

    def clean_number(self):
        return clean_number(self.cleaned_data["number"])


class ImportForm(forms.Form):
    MAX_BYTES = 5 * 1024 * 1024

    file = forms.FileField(label=_("CSV file"))

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if upload.size > self.MAX_BYTES:
            raise forms.ValidationError(_("The file is too large (5 MB at most)."))
        raw = upload.read()
        # Excel in Japan saves CSV as Shift_JIS (cp932); everything else sends UTF-8.
        for encoding in ("utf-8-sig", "cp932"):
            try:
                return raw.decode(encoding)
            except UnicodeDecodeError:
                continue
        raise forms.ValidationError(_("The file is neither UTF-8 nor Shift_JIS text."))


class AccountForm(forms.Form):
    """設定 ▶ アカウント (seed 2-2): one of the two accounts; the one saved becomes active."""

    slot = forms.TypedChoiceField(
        label=_("Account"),
        choices=SipAccount.Slot.choices,
        coerce=int,
        widget=forms.RadioSelect,
    )
    extension = forms.CharField(
        label=_("Extension"), max_length=32, validators=[validate_extension]
    )
    password = forms.CharField(
        label=_("Password"),
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text=_("Leave empty to keep the saved password."),
    )
    pbx_domain = forms.CharField(label=_("PBX domain"), max_length=255, required=False)
    outbound_proxy = forms.CharField(
        label=_("Proxy"), max_length=262, required=False, validators=[validate_hostport]
    )

    TESTIDS = {
        "extension": "acct-extension",
        "password": "acct-password",
        "pbx_domain": "acct-domain",
        "outbound_proxy": "acct-proxy",
    }

    def __init__(self, *args, has_password=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.has_password = has_password
        for name, testid in self.TESTIDS.items():
            self.fields[name].widget.attrs["data-testid"] = testid
        if has_password:
            self.fields["password"].widget.attrs["placeholder"] = "••••••••"

    def clean(self):
        cleaned = super().clean()
        if not cleaned.get("password") and not self.has_password:
            self.add_error("password", _("Enter the password of this account."))
        return cleaned

    def account_values(self) -> dict:
        values = {
            "extension": self.cleaned_data["extension"],
            "pbx_domain": self.cleaned_data["pbx_domain"],
            "outbound_proxy": self.cleaned_data["outbound_proxy"],
        }
        if self.cleaned_data.get("password"):
            values["password"] = self.cleaned_data["password"]
        return values


class LineButtonForm(forms.ModelForm):
    class Meta:
        model = LineButton
        fields = ["position", "kind", "number", "label", "ring_tone"]
        widgets = {"position": forms.NumberInput(attrs={"min": 1, "max": 48})}

    def clean_number(self):
        number = self.cleaned_data.get("number", "")
        return clean_number(number) if number else ""


class BaseLineButtonFormSet(forms.BaseModelFormSet):
    def __init__(self, *args, limit: int, **kwargs):
        self.limit = limit
        super().__init__(*args, **kwargs)

    def clean(self):
        super().clean()
        kept = [
            form for form in self.forms if form.cleaned_data and not form.cleaned_data.get("DELETE")
        ]
        if len(kept) > self.limit:
            raise forms.ValidationError(
                _("At most %(limit)d buttons.") % {"limit": self.limit}, code="too_many"
            )


LineButtonFormSet = forms.modelformset_factory(
    LineButton, form=LineButtonForm, formset=BaseLineButtonFormSet, extra=1, can_delete=True
)
