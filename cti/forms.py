from django import forms
from django.contrib.auth import get_user_model
from django.utils.translation import gettext_lazy as _

from cti.models import CtiSettings, Customer, CustomerPhone, Reception
from phone.numbers import clean_number


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
        # The URLs are validated by the model (cti.models.validate_url_template).
        for name in CtiSettings.URL_FIELDS:
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


class CustomerForm(forms.ModelForm):
    class Meta:
        model = Customer
        fields = ["name", "kana", "owner1", "owner2", "notes"]
        widgets = {"notes": forms.Textarea(attrs={"rows": 3})}

    def __init__(self, *args, tenant, **kwargs):
        super().__init__(*args, **kwargs)
        staff = get_user_model().objects.filter(profile__tenant=tenant, is_active=True)
        self.fields["owner1"].queryset = staff
        self.fields["owner2"].queryset = staff


class CustomerPhoneForm(forms.ModelForm):
    class Meta:
        model = CustomerPhone
        fields = ["label", "number"]

    def clean_number(self):
        return clean_number(self.cleaned_data["number"])


CustomerPhoneFormSet = forms.inlineformset_factory(
    Customer, CustomerPhone, form=CustomerPhoneForm, extra=1, can_delete=True
)


class ReceptionForm(forms.ModelForm):
    class Meta:
        model = Reception
        fields = ["caller_number", "customer", "memo"]
        widgets = {"memo": forms.Textarea(attrs={"rows": 5, "data-testid": "reception-memo"})}

    def __init__(self, *args, tenant, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["customer"].queryset = Customer.objects.filter(tenant=tenant)
        self.fields["caller_number"].widget.attrs["data-testid"] = "reception-number"
