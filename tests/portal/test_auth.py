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


@pytest.fixture
def behind_one_proxy(settings):
    """The portal behind one reverse proxy (TRUSTED_PROXY_COUNT=1), as portal.settings sets it."""
    from portal.settings import axes_client_address

    headers, count = axes_client_address(1)
    settings.AXES_IPWARE_META_PRECEDENCE_ORDER = headers
    settings.AXES_IPWARE_PROXY_COUNT = count


def _via_proxy(client, forwarded_for, **data):
    # What the proxy (REMOTE_ADDR 10.0.0.2) passes on: the client's header plus the address
    # the proxy itself saw, appended on the right.
    return client.post(
        reverse("login"), data, REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR=forwarded_for
    )


def test_it_locks_out_one_address_behind_the_proxy_not_the_user_everywhere(
    cast, client, settings, behind_one_proxy
):
    from django.test import Client

    for _ in range(settings.AXES_FAILURE_LIMIT):
        _via_proxy(client, "203.0.113.66", username="alice", password="wrong")
    locked = _via_proxy(client, "203.0.113.66", username="alice", password=cast.password)
    assert locked.status_code == 429
    # Alice at the office, through the same proxy, still logs in.
    office = Client()
    response = _via_proxy(office, "198.51.100.7", username="alice", password=cast.password)
    assert response.status_code == 302 and "_auth_user_id" in office.session


def test_it_keys_the_lockout_on_the_address_the_proxy_saw_not_on_what_the_client_wrote(
    cast, client, settings, behind_one_proxy
):
    from django.test import Client

    # The attacker writes alice's office address into the header; the proxy appends the real one.
    for _ in range(settings.AXES_FAILURE_LIMIT):
        _via_proxy(client, "198.51.100.7, 203.0.113.66", username="alice", password="wrong")
    office = Client()
    response = _via_proxy(office, "198.51.100.7", username="alice", password=cast.password)
    assert response.status_code == 302
    again = _via_proxy(client, "198.51.100.9, 203.0.113.66", username="alice", password="x")
    assert again.status_code == 429  # and changing the written part does not help the attacker


def test_it_ignores_x_forwarded_for_without_a_trusted_proxy(cast, client, settings):
    from django.test import Client

    # TRUSTED_PROXY_COUNT=0 (the default): anyone could send the header, so it counts for nothing.
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post(
            reverse("login"), {"username": "alice", "password": "wrong"},
            HTTP_X_FORWARDED_FOR="203.0.113.66",
        )  # fmt: skip
    response = Client().post(
        reverse("login"), {"username": "alice", "password": cast.password},
        HTTP_X_FORWARDED_FOR="198.51.100.7",
    )  # fmt: skip
    assert response.status_code == 429  # same REMOTE_ADDR: the same client as far as we know


@pytest.mark.parametrize(
    ("proxies", "forwarded_for", "client"),
    [
        (0, "198.51.100.1", "10.0.0.2"),  # no proxy: REMOTE_ADDR, whatever the header says
        (1, "203.0.113.66", "203.0.113.66"),
        (1, "198.51.100.1, 203.0.113.66", "203.0.113.66"),  # a written entry on the left
        (1, "garbage, 203.0.113.66", "203.0.113.66"),
        # A load balancer in front of nginx: the client is what the load balancer appended.
        (2, "198.51.100.1, 203.0.113.66, 192.0.2.10", "203.0.113.66"),
        (2, "203.0.113.66, 192.0.2.10", "203.0.113.66"),
    ],
)
def test_it_reads_the_client_address_through_the_configured_proxies(
    settings, rf, proxies, forwarded_for, client
):
    from axes.helpers import get_client_ip_address

    from portal.settings import axes_client_address

    headers, count = axes_client_address(proxies)
    settings.AXES_IPWARE_META_PRECEDENCE_ORDER = headers
    settings.AXES_IPWARE_PROXY_COUNT = count
    request = rf.post("/login/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR=forwarded_for)
    assert get_client_ip_address(request) == client
