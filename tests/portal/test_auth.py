import pytest
from django.urls import reverse


def test_it_redirects_anonymous_visitors_to_login(client):
    response = client.get(reverse("phone:index"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_it_logs_in_through_the_form_and_lands_on_the_phone(cast, client):
    page = client.get(reverse("login"))
    body = page.content.decode()
    for hook in ("login-username", "login-password", "login-submit"):
        assert f'data-testid="{hook}"' in body
    response = client.post(
        reverse("login"), {"username": "alice", "password": cast.password}, follow=True
    )
    assert response.redirect_chain[-1][0] == reverse("phone:index")
    assert response.context["user"] == cast.alice


def test_it_explains_a_wrong_password_in_japanese(cast, client):
    response = client.post(reverse("login"), {"username": "alice", "password": "nope"})
    assert response.status_code == 200
    assert 'data-testid="login-error"' in response.content.decode()
    assert "パスワード" in response.content.decode()


def test_it_speaks_english_when_the_user_picks_it(cast, client):
    response = client.post(reverse("set_language"), {"language": "en", "next": "/login/"})
    assert response.status_code == 302
    body = client.get(reverse("login")).content.decode()
    assert "Log in" in body
    assert "ログイン" not in body.split("<select")[0]


def test_it_logs_out_with_post_only(cast, login):
    client = login(cast.alice)
    assert client.get(reverse("logout")).status_code == 405
    response = client.post(reverse("logout"))
    assert response.status_code == 302
    assert client.get(reverse("phone:index")).status_code == 302


def test_it_throttles_repeated_failed_logins(cast, client, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post(reverse("login"), {"username": "alice", "password": "wrong"})
    # Now even the right password is refused for a while, with a clear page.
    response = client.post(reverse("login"), {"username": "alice", "password": cast.password})
    assert response.status_code == 429
    assert 'data-testid="login-locked"' in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_it_does_not_lock_out_other_users_from_the_same_address(cast, client, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post(reverse("login"), {"username": "alice", "password": "wrong"})
    response = client.post(reverse("login"), {"username": "bob", "password": cast.password})
    assert response.status_code == 302


@pytest.mark.parametrize("next_url", ["https://evil.example/", "//evil.example/"])
def test_it_refuses_to_redirect_off_site_after_login(cast, client, next_url):
    response = client.post(
        reverse("login") + f"?next={next_url}",
        {"username": "alice", "password": cast.password, "next": next_url},
    )
    assert response.status_code == 302
    assert "evil.example" not in response["Location"]


def test_it_speaks_japanese_by_default_whatever_the_browser_says(cast, client):
    body = client.get(reverse("login"), HTTP_ACCEPT_LANGUAGE="en-US,en;q=0.9").content.decode()
    assert 'lang="ja"' in body
    assert "ユーザ名" in body and "パスワード" in body
    assert ">ログイン<" in body
