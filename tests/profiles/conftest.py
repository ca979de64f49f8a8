"""Fixtures shared by the tests of profiles."""

import base64
import json

import pytest

from profiles.processing import events_process_pending

TRACKING_AUTH = "Basic " + base64.b64encode(b"test-env-write-key:").decode()


def tracking_processed(client, path: str, body: dict) -> dict:
    """Post one tracking call, process it (a chunk of its own); return the answer."""
    response = client.post(
        path,
        data=json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=TRACKING_AUTH,
    )
    assert response.status_code == 200, response.content
    events_process_pending()
    return response.json()


@pytest.fixture
def send_processed(client):
    """Post one tracking call and process it: each call is a chunk of its own."""

    def post(path: str, body: dict) -> None:
        tracking_processed(client, path, body)

    return post


@pytest.fixture
def signed_in(client, marketer):
    """The test client, signed in as a staff marketer."""
    client.force_login(marketer)
    return client
