import string

from django import forms
from django.utils.translation import gettext_lazy as _

from cti.models import CtiSettings

PLACEHOLDERS = {"number", "called", "call_id", "extension", "customer_id"}


def validate_url_template(value: str) -> None:
    """An http(s) URL or an app URL scheme, using only our placeholders (seed 5-2)."""
    if not value:
        return
    try:
        names = {name for _text, name, _spec, _conv in string.Formatter().parse(value) if name}
    except ValueError as exc:
        raise forms.ValidationError(_("Unbalanced { } in the URL.")) from exc
    unknown = names - PLACEHOLDERS
    if unknown:
        raise forms.ValidationError(
            _("Unknown placeholder: %(names)s. Use {number} {called} {call_id} {extension} "
              "{customer_id}.") % {"names": ", ".join(sorted(unknown))}
        )  # fmt: skip
    scheme = value.split(":", 1)[0].lower() if ":" in value else ""
    if not scheme or scheme in {"javascript", "data", "vbscript", "file"}:
        raise forms.ValidationError(_("Enter a URL such as https://crm.example.jp/?tel={number}."))


class CtiSettingsForm(forms.ModelForm):
    class Meta:
        model = CtiSettings
        fields = [
            "enabled", "show_on", "target", "reception_url", "customer_list_url",
            "use_directory_url", "directory_url",
        ]  # fmt: skip
        widgets = {"show_on": forms.RadioSelect, "target": forms.RadioSelect}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name in ("reception_url", "customer_list_url", "directory_url"):
            self.fields[name].validators.append(validate_url_template)
            self.fields[name].widget.attrs["placeholder"] = "https://crm.example.jp/?tel={number}"
        for name, field in self.fields.items():
            field.widget.attrs["data-testid"] = f"cti-{name.replace('_', '-')}"

    def clean(self):
        cleaned = super().clean()
        target = cleaned.get("target")
        external = target in (CtiSettings.Target.EXTERNAL_URL, CtiSettings.Target.EXTERNAL_APP)
        if external and not (cleaned.get("reception_url") or cleaned.get("customer_list_url")):
            self.add_error("reception_url", _("An external target needs at least one URL."))
        if cleaned.get("use_directory_url") and not cleaned.get("directory_url"):
            self.add_error("directory_url", _("Enter the directory URL."))
        return cleaned
