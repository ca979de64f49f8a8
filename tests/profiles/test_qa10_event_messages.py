"""QA pass qa10: the table that claims messageIds keeps one index.

An event stored by the old release's web process after migration 0038 copied the
ids claims nothing: README's upgrade steps stop the web processes too for it.
"""

import base64
import importlib

import pytest
from django.db import connection
from django.test import Client

pytestmark = pytest.mark.django_db(transaction=True)

AUTH = {
    "HTTP_AUTHORIZATION": "Basic " + base64.b64encode(b"test-env-write-key:").decode()
}
MIGRATION = importlib.import_module("profiles.migrations.0038_event_messages")


def batch_of(*message_ids: str) -> dict:
    items = ",".join(
        f'{{"type":"track","messageId":"{m}","userId":"u-{m}","event":"Viewed"}}'
        for m in message_ids
    )
    response = Client().post(
        "/v1/batch",
        data='{"batch":[' + items + "]}",
        content_type="application/json",
        **AUTH,
    )
    assert response.status_code == 200, response.content
    return response.json()


def test_the_claim_table_keeps_one_index_its_primary_key():
    # The change took the messageId index off the event table to save an index
    # entry per event; its new table should not add two. No query looks messageIds
    # up with LIKE (the admin's search is on the event table).
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'profiles_eventmessage'"
        )
        names = [name for (name,) in cursor.fetchall()]

    assert names == ["profiles_eventmessage_pkey"]
