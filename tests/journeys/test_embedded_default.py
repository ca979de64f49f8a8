"""The embedded default (SQLite, no broker server) runs the demo and the shop feed.

The suite runs on PostgreSQL; `make run` runs on SQLite. This test starts fresh
`manage.py` processes on an empty SQLite file, as `make run` does, plays the demo
and posts the Shopify fixtures, so a query only PostgreSQL understands is caught.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

ROOT = Path(settings.BASE_DIR)
SHOP_SCRIPT = """
import json
from pathlib import Path
from django.test import Client
from profiles.models import ShopCheckout, ShopOrder, WebhookDelivery

shop = Path({fixtures!r}) / "shopify"
deliveries = json.loads((shop / "webhook_headers.json").read_text())["deliveries"]
client = Client(HTTP_HOST="127.0.0.1")
codes = []
for name in ("checkouts_create.json", "checkouts_update.json", "orders_create.json"):
    headers = {{f"HTTP_{{k.upper().replace('-', '_')}}": v for k, v in deliveries[name].items()
               if k.lower() != "content-type"}}
    response = client.post("/webhooks/shopify", data=(shop / name).read_bytes(),
                           content_type="application/json", **headers)
    codes.append(response.status_code)
order = ShopOrder.objects.get()
print(json.dumps({{
    "codes": codes,
    "checkouts": ShopCheckout.objects.count(),
    "order_total": str(order.total),
    "failed": list(WebhookDelivery.objects.exclude(error="").values_list("error", flat=True)),
}}))
"""


def manage(*args: str, env: dict) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture
def embedded_env(tmp_path, fixtures_dir) -> dict:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DATABASE_", "CELERY_", "DJANGO_"))
    }
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.local",
        BESPOKE_VAR_DIR=str(tmp_path / "var"),
        BESPOKE_FIXTURES_DIR=str(fixtures_dir),
        BESPOKE_SHOPIFY_WEBHOOK_SECRETS="test_shopify_webhook_secret_DO_NOT_USE",
        LOG_LEVEL="WARNING",
    )
    manage("migrate", "--no-input", "-v", "0", env=env)
    return env


def test_the_demo_and_the_shop_feed_work_on_sqlite(embedded_env, fixtures_dir):
    demo = manage("demo", env=embedded_env)
    script = SHOP_SCRIPT.format(fixtures=str(fixtures_dir))
    printed = manage("shell", "-c", script, env=embedded_env)
    shop = json.loads(printed.strip().splitlines()[-1])

    assert "33 subscribed, 7 unsubscribed, 4 cleaned" in demo
    assert "sent 8, skipped 4" in demo
    assert shop == {
        "codes": [200, 200, 200],
        "checkouts": 1,
        "order_total": "152.29",
        "failed": [],
    }
