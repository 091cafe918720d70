"""Click-to-dial: a CRM with an API key makes a user's phone dial."""

import json

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.urls import reverse

from cti.models import ApiToken
from cti.tokens import create_token
from phone.signalling import events


@pytest.fixture
def key(cast):
    return create_token(cast.tenant_a, "CRM")[1]


@pytest.fixture
def alice_events(cast):
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(events.user_group(cast.alice.pk), channel)
    return lambda: async_to_sync(layer.receive)(channel)


def post(client, body, key=None):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"} if key else {}
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    return client.post(reverse("cti:api_dial"), data, content_type="application/json", **headers)


def test_it_asks_the_users_phone_to_dial(
    cast, client, key, alice_events, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = post(client, {"user": "alice", "number": "03-1234-5678"}, key)
    assert response.status_code == 202
    assert response.json() == {"status": "sent", "user": "alice", "number": "0312345678"}
    assert alice_events() == {
        "type": "phone.dial_request", "number": "0312345678", "source": "api:CRM",
    }  # fmt: skip
    assert ApiToken.objects.get().last_used_at is not None


def test_it_finds_the_user_by_extension(cast, client, key, django_capture_on_commit_callbacks):
    response = post(client, {"extension": "1002", "number": "1001"}, key)
    assert response.status_code == 202 and response.json()["user"] == "bob"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"user": "alice", "number": "03-abc"}, 400, "bad_number"),
        ({"user": "alice"}, 400, "bad_number"),
        ({"user": "alice", "number": "0" * 33}, 400, "bad_number"),  # longer than any number
        ("not json", 400, "bad_json"),
        ([1, 2], 400, "bad_json"),
        ({"user": "charlie", "number": "1"}, 404, "no_such_user"),  # another tenant's user
        ({"extension": "2001", "number": "1"}, 404, "no_such_user"),
        ({"number": "1"}, 404, "no_such_user"),
    ],
)
def test_it_explains_bad_requests(cast, client, key, body, status, code):
    response = post(client, body, key)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


@pytest.mark.parametrize("auth", [None, "Bearer nope", "Bearer bp_zz_zz", "Basic abc"])
def test_it_needs_a_valid_key(cast, client, auth):
    headers = {"HTTP_AUTHORIZATION": auth} if auth else {}
    response = client.post(
        reverse("cti:api_dial"), json.dumps({"user": "alice", "number": "1"}),
        content_type="application/json", **headers,
    )  # fmt: skip
    assert response.status_code == 401


def test_it_refuses_a_deactivated_key_and_keeps_only_a_hash(cast, client, key):
    token = ApiToken.objects.get()
    assert key not in (token.key_hash, token.prefix)
    token.active = False
    token.save()
    assert post(client, {"user": "alice", "number": "1"}, key).status_code == 401


def test_it_refuses_get_and_oversized_bodies(cast, client, key):
    assert client.get(reverse("cti:api_dial")).status_code == 405
    big = json.dumps({"user": "alice", "number": "1", "pad": "x" * 5000})
    assert post(client, big, key).status_code == 413
