from django.contrib.auth import views as auth_views

from portal.forms import LoginForm

login_view = auth_views.LoginView.as_view(
    template_name="portal/login.html",
    authentication_form=LoginForm,
    redirect_authenticated_user=True,
)

# POST only (Django 5): a logout link cannot be triggered by a third-party page.
logout_view = auth_views.LogoutView.as_view()
