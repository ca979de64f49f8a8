"""The demo story's content: its segments and its template, as plain data."""

from segments.seeds import SEED_SEGMENTS

SEGMENTS = [
    *SEED_SEGMENTS,
    {
        "slug": "viewed-but-did-not-buy",
        "name": "Viewed but did not buy",
        "description": "Viewed a product and never completed an order.",
        "rule": {
            "all": [
                {"event": "Product Viewed", "did": True},
                {"event": "Order Completed", "did": False},
            ]
        },
    },
    {
        "slug": "spring-sale-audience",
        "name": "Spring sale audience",
        "description": "Newsletter readers, and anyone who viewed a product.",
        "rule": {
            "any": [
                {"attribute": "tags", "op": "contains", "value": "Newsletter"},
                {"event": "Product Viewed", "did": True},
            ]
        },
    },
]

TEMPLATE = {
    "name": "Spring sale 2025",
    "subject": "{{ profile.first_name | default: 'Hello' }}, the spring sale is on",
    "html": """\
<div style="font-family: Arial, sans-serif; max-width: 560px; margin: auto">
  <h1 style="color: #2f5bd3">Hi {{ profile.first_name | default: "there" }},</h1>
  <p>Our spring sale starts today: 10% off everything with code <b>SPRING10</b>.</p>
  {% if profile.country_code == "BR" %}
  <p>Free shipping to Brazil on orders over R$ 300 this week.</p>
  {% elsif profile.continent == "Europe" %}
  <p>Shipping to {{ profile.city | default: "Europe" }} is free over 50 EUR,
     with returns to our Rotterdam warehouse.</p>
  {% elsif profile.country_code == "US" %}
  <p>Free 2-day shipping anywhere in the US over $75.</p>
  {% else %}
  <p>We ship worldwide: see the rates for your country at checkout.</p>
  {% endif %}
  {% if profile.order_count > 0 %}
  {% if profile.order_count > 1 %}{% assign plural = "s" %}{% endif %}
  <p>Thank you for your {{ profile.order_count }} order{{ plural }} so far.</p>
  {% endif %}
  <p style="font-size: 12px; color: #666">
    You receive this because you subscribed to Example Outfitters.
    <a href="{{ unsubscribe_url }}">Unsubscribe</a>
  </p>
</div>
""",
    "text": """\
Hi {{ profile.first_name | default: "there" }},

Our spring sale starts today: 10% off everything with code SPRING10.
{% if profile.country_code == "BR" %}
Free shipping to Brazil on orders over R$ 300 this week.
{% elsif profile.continent == "Europe" %}
Shipping to {{ profile.city | default: "Europe" }} is free over 50 EUR, with returns
to our Rotterdam warehouse.
{% elsif profile.country_code == "US" %}
Free 2-day shipping anywhere in the US over $75.
{% else %}
We ship worldwide: see the rates for your country at checkout.
{% endif %}{% if profile.order_count > 0 %}
{% if profile.order_count > 1 %}{% assign plural = "s" %}{% endif -%}
Thank you for your {{ profile.order_count }} order{{ plural }} so far.
{% endif %}
Unsubscribe: {{ unsubscribe_url }}
""",
}

CAMPAIGN = {
    "slug": "spring-sale-2025",
    "name": "Spring sale 2025",
    "segment": "spring-sale-audience",
}

MAILCHIMP_FILES = [
    "mailchimp/subscribed_members_export.csv",
    "mailchimp/unsubscribed_members_export.csv",
    "mailchimp/cleaned_members_export.csv",
]
SEGMENT_BATCHES = ["segment/batch.json", "segment/batch_edge_cases.json"]

DEMO_USERNAME = "demo"
DEMO_PASSWORD = "bespoke-demo"  # noqa: S105 - the demo's published sign-in
DEMO_WRITE_KEY = "demo-write-key"
