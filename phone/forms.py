from django import forms
from django.utils.translation import gettext_lazy as _

from phone.models import Contact
from phone.numbers import clean_number
from phone.text import to_katakana


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

    def clean_kana(self):
        # Stored as full-width katakana so that any way of typing it finds the contact.
        return to_katakana(self.cleaned_data["kana"]).strip()


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
