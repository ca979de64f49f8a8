"""The seed segments every account starts with, as plain rules.

The demo saves them, tests/segments/test_seeds.py checks who each selects, and
bench/segments.py times them on a million profiles against hand-written SQL.
"""

SEED_SEGMENTS = [
    {
        "slug": "high-value-customers",
        "name": "High-value customers",
        "description": "Lifetime value over 500, an order in the last 30 days, engaged.",
        "rule": {
            "all": [
                {"metric": "lifetime_value", "op": "gt", "value": 500},
                {"event": "Order Completed", "within_days": 30},
                {"metric": "engagement_score", "op": "gte", "value": 60},
            ]
        },
    },
    {
        "slug": "at-risk",
        "name": "At risk",
        "description": (
            "Opening less over 60 days, no order in 60 days, but still opening email "
            "in the last 30: worth a win-back before they go quiet."
        ),
        "rule": {
            "all": [
                {"trend": "Email Opened", "over_days": 60, "direction": "declining"},
                {"not": {"event": "Order Completed", "within_days": 60}},
                {"engagement": "opened", "within_days": 30},
            ]
        },
    },
    {
        "slug": "engaged-browsers",
        "name": "Engaged browsers",
        "description": "Viewed products at least 5 times in 30 days and never bought.",
        "rule": {
            "all": [
                {
                    "event": "Product Viewed",
                    "within_days": 30,
                    "count": {"op": "gte", "value": 5},
                },
                {"event": "Order Completed", "did": False},
            ]
        },
    },
    {
        "slug": "frequent-buyers-in-europe",
        "name": "Frequent buyers in Europe",
        "description": "More than 3 orders in the last 30 days, living in Europe.",
        "rule": {
            "all": [
                {
                    "event": "Order Completed",
                    "within_days": 30,
                    "count": {"op": "gt", "value": 3},
                },
                {"attribute": "continent", "op": "eq", "value": "Europe"},
            ]
        },
    },
]
