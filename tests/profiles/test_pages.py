"""The profile list and one person's page, read by a signed-in marketer."""

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse

from profiles.models import (
    ConsentRecord,
    Event,
    IdentityKind,
    ProfileIdentity,
    ProfileMerge,
    ProfileTag,
    SubscriptionStatus,
    SuppressionReason,
    TraitDefinition,
)
from profiles.services import suppression_add
from segments.selectors import segments_containing
from tests.factories import ProfileFactory, SegmentFactory, UserFactory

pytestmark = pytest.mark.django_db

WHEN = datetime(2025, 3, 14, 15, 0, tzinfo=UTC)
NEWSLETTER_RULE = {"attribute": "tags", "op": "contains", "value": "Newsletter"}

PAGES = [
    ("profile_list", {}),
    ("profile_detail", {"pk": 1}),
    ("sources_health", {}),
    ("source_keys", {}),
    ("source_key_revoke", {"pk": 1}),
    ("trait_list", {}),
    ("trait_new", {}),
    ("trait_edit", {"pk": 1}),
]


def event(profile, n: int, **fields) -> Event:
    defaults = {
        "message_id": f"msg-{profile.pk}-{n}",
        "type": "track",
        "profile": profile,
        "timestamp": WHEN + timedelta(minutes=n),
        "received_at": WHEN + timedelta(minutes=n),
    }
    return Event.objects.create(**(defaults | fields))


def cells(page: str, table_class: str) -> list[list[str]]:
    """Return the text of each row's cells in the table with this class."""
    table = re.search(rf'<table class="{table_class}">(.*?)</table>', page, re.S)
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", table.group(1), re.S)
    return [
        [
            re.sub(r"<[^>]+>", " ", c).split()
            for c in re.findall(r"<td[^>]*>(.*?)</td>", r, re.S)
        ]
        for r in rows
        if "<td" in r
    ]


def joined(page: str, table_class: str) -> list[list[str]]:
    return [[" ".join(c) for c in row] for row in cells(page, table_class)]


@pytest.mark.parametrize(("name", "kwargs"), PAGES)
def test_every_page_sends_a_stranger_to_sign_in(client, name, kwargs):
    url = reverse(name, kwargs=kwargs)

    response = client.get(url)

    assert response.status_code == 302
    assert response.url == f"{reverse('login')}?next={url}"


@pytest.mark.parametrize(("name", "kwargs"), PAGES)
def test_every_page_refuses_a_signed_in_user_who_is_not_staff(client, name, kwargs):
    client.force_login(UserFactory(username="outsider", is_staff=False))

    response = client.get(reverse(name, kwargs=kwargs))

    assert response.status_code == 403


def test_the_profile_list_filters_by_tag(signed_in):
    ana = ProfileFactory(email="ana@example.com")
    ben = ProfileFactory(email="ben@example.com")
    ProfileFactory(email="cleo@example.com")
    ProfileTag.objects.create(profile=ana, name="VIP")
    ProfileTag.objects.create(profile=ana, name="Newsletter")
    ProfileTag.objects.create(profile=ben, name="Newsletter")

    response = signed_in.get(reverse("profile_list"), {"tag": "VIP"})

    page = response.content.decode()
    assert "1 profile." in page
    assert "ana@example.com" in page
    assert "ben@example.com" not in page
    assert '<option value="Newsletter">Newsletter</option>' in page


def test_the_profile_list_combines_search_status_and_tag(signed_in):
    ana = ProfileFactory(email="ana@example.com", first_name="Ana")
    gone = ProfileFactory(
        email="ana.old@example.com",
        first_name="Ana",
        subscription_status=SubscriptionStatus.UNSUBSCRIBED,
    )
    ProfileTag.objects.create(profile=ana, name="VIP")
    ProfileTag.objects.create(profile=gone, name="VIP")

    response = signed_in.get(
        reverse("profile_list"), {"q": "ana", "status": "subscribed", "tag": "VIP"}
    )

    page = response.content.decode()
    assert "1 profile." in page
    assert f'href="{reverse("profile_detail", kwargs={"pk": ana.pk})}"' in page
    assert f'href="{reverse("profile_detail", kwargs={"pk": gone.pk})}"' not in page


@pytest.mark.parametrize(
    "query",
    ["kai@xn--bcher-kva.example.com", " KAI@Bücher.example.com ", "usr_1001", "#{pk}"],
)
def test_the_profile_search_finds_a_profile_named_outright(signed_in, query):
    kai = ProfileFactory(email="kai@bücher.example.com")
    ProfileIdentity.objects.create(
        profile=kai, kind=IdentityKind.USER_ID, value="usr_1001"
    )
    ProfileFactory(email="other@example.com")

    response = signed_in.get(reverse("profile_list"), {"q": query.format(pk=kai.pk)})

    page = response.content.decode()
    assert "1 profile." in page
    assert f'href="{reverse("profile_detail", kwargs={"pk": kai.pk})}"' in page


def test_the_profile_page_shows_the_timeline_newest_first_with_key_properties(
    signed_in,
):
    ana = ProfileFactory(email="ana@example.com")
    event(
        ana,
        1,
        type="page",
        name="Home",
        event="",
        properties={"path": "/collections/sale"},
    )
    event(
        ana,
        2,
        event="Product Viewed",
        properties={
            "product_id": "801",
            "name": "Trailhead Rain Jacket",
            "category": "Jackets",
            "value": 89.0,
        },
    )
    event(
        ana,
        3,
        event="Checkout Started",
        properties={
            "revenue": 113.0,
            "currency": "USD",
            "products": [{"name": "Trailhead Rain Jacket"}, {"name": "Socks"}],
        },
        context={"page": {"path": "/checkouts/cn/b7d5"}},
    )

    response = signed_in.get(reverse("profile_detail", kwargs={"pk": ana.pk}))

    page = response.content.decode()
    rows = joined(page, "timeline")
    assert [row[1:] for row in rows] == [
        [
            "track",
            "Checkout Started",
            "",
            "product Trailhead Rain Jacket, Socks revenue 113.00 USD "
            "page /checkouts/cn/b7d5",
        ],
        [
            "track",
            "Product Viewed",
            "",
            "product Trailhead Rain Jacket value 89.00 category Jackets",
        ],
        ["page", "Home", "", "page /collections/sale"],
    ]
    assert "3 events, newest first; times are in UTC." in page


def test_the_timeline_tells_orders_refunds_and_machine_opens_apart(signed_in):
    ana = ProfileFactory(email="ana@example.com")
    event(
        ana,
        0,
        event="Email Bounced",
        source="esp:sendgrid",
        properties={"campaign_id": "spring", "reason": "550 5.1.1 no such user"},
    )
    event(
        ana,
        1,
        event="Order Completed",
        source="segment:web",
        properties={"order_id": 1057, "total": 5},
    )
    event(
        ana,
        1,
        message_id="shop-order",
        event="Order Completed",
        source="shopify",
        properties={"order_id": "1058", "total": 75.0, "currency": "USD"},
    )
    event(
        ana,
        4,
        type="identify",
        event="",
        source="segment:settings",
        traits={
            "email": "ana@example.com",
            "plan": "pro",
            "age": 41,
            "a": 1,
            "b" * 50: 2,
        },
    )
    event(
        ana, 2, event="Order Refunded", properties={"order_id": "1057", "refund_id": 9}
    )
    event(
        ana,
        3,
        event="Email Opened",
        properties={"sg_machine_open": True, "campaign_id": "spring"},
    )
    # The spec names a checkout's id order_id too: shown as the checkout's.
    event(
        ana,
        3,
        message_id="checkout",
        event="Checkout Started",
        source="shopify",
        properties={"order_id": "c2b7f1", "total": 42.5, "currency": "USD"},
    )

    response = signed_in.get(reverse("profile_detail", kwargs={"pk": ana.pk}))

    rows = joined(response.content.decode(), "timeline")
    assert [row[2:] for row in rows] == [
        # What an identify said, the first four traits by name.
        [
            "Identify",
            "site (a write key of the settings)",
            f"said a 1; age 41; {'b' * 40}… 2; email ana@example.com; 1 more",
        ],
        ["Checkout Started", "Shopify", "checkout c2b7f1 total 42.50 USD"],
        ["Email Opened", "", "campaign spring machine open not counted as an open"],
        ["Order Refunded", "", "order 1057 refund 9"],
        # A shop's 75.0 is money: shown with its cents; a whole 5 as sent. Where
        # each report came from tells two reports of one order from two orders.
        ["Order Completed", "Shopify", "order 1058 total 75.00 USD"],
        ["Order Completed", "site (write key “web”)", "order 1057 total 5"],
        [
            "Email Bounced",
            "ESP (sendgrid)",
            "campaign spring reason 550 5.1.1 no such user",
        ],
    ]


def test_the_timeline_pages_through_older_events(signed_in):
    ana = ProfileFactory(email="ana@example.com")
    for n in range(51):
        event(ana, n, event=f"Event {n}")
    url = reverse("profile_detail", kwargs={"pk": ana.pk})

    first = signed_in.get(url).content.decode()
    second = signed_in.get(url, {"page": 2}).content.decode()

    assert len(cells(first, "timeline")) == 50
    assert joined(first, "timeline")[0][2] == "Event 50"
    assert "Page 1 of 2" in first
    assert [row[2] for row in joined(second, "timeline")] == ["Event 0"]


def test_the_profile_page_shows_computed_and_declared_traits(signed_in):
    TraitDefinition.objects.create(name="member_rating", type="number")
    ana = ProfileFactory(
        email="ana@example.com",
        lifetime_value="240.50",
        order_count=2,
        average_order_value="120.25",
        engagement_score=72,
        favourite_category="Outerwear",
        traits={"member_rating": 4, "shoe_size": "38"},
    )

    response = signed_in.get(reverse("profile_detail", kwargs={"pk": ana.pk}))

    page = response.content.decode()
    assert "<tr><th>Lifetime value</th><td>240.50</td></tr>" in page
    assert "<tr><th>Orders</th><td>2</td></tr>" in page
    assert (
        "<tr><th>Average order (of orders in lifetime value)</th><td>120.25</td></tr>"
        in page
    )
    assert "<tr><th>Engagement score</th><td>72</td></tr>" in page
    assert "<tr><th>Favourite category</th><td>Outerwear</td></tr>" in page
    assert "<tr><th>Last open</th><td>—</td></tr>" in page
    assert joined(page, "traits") == [
        ["member_rating", "4", "Number"],
        ["shoe_size", "38", "not declared"],
    ]


def test_the_profile_page_shows_identities_consent_suppression_and_merges(
    signed_in,
):
    ana = ProfileFactory(email="ana@example.com")
    ProfileIdentity.objects.create(
        profile=ana, kind=IdentityKind.USER_ID, value="usr_1001"
    )
    ProfileIdentity.objects.create(
        profile=ana, kind=IdentityKind.ANONYMOUS_ID, value="anon-7"
    )
    ConsentRecord.objects.create(
        profile=ana,
        status=SubscriptionStatus.SUBSCRIBED,
        source="import:mailchimp",
        occurred_at=WHEN,
        ip_address="198.51.100.7",
        wording="Yes, send me the newsletter",
    )
    ConsentRecord.objects.create(
        profile=ana,
        status=SubscriptionStatus.UNSUBSCRIBED,
        source="unsubscribe_link",
        occurred_at=WHEN + timedelta(days=2),
        address="ana@example.com",
    )
    suppression_add(
        email_key="ana@example.com",
        reason=SuppressionReason.HARD_BOUNCE,
        source="test",
    )
    ProfileMerge.objects.create(kept=ana, merged_profile_id=99, reason="identify")

    response = signed_in.get(reverse("profile_detail", kwargs={"pk": ana.pk}))

    page = response.content.decode()
    assert [row[:2] for row in joined(page, "identities")] == [
        ["Anonymous id", "anon-7"],
        ["User id", "usr_1001"],
    ]
    assert [row[1:6] for row in joined(page, "consents")] == [
        ["Unsubscribed", "ana@example.com", "unsubscribe_link", "", ""],
        [
            "Subscribed",
            "–",
            "import:mailchimp",
            "198.51.100.7",
            "Yes, send me the newsletter",
        ],
    ]
    assert (
        '<td data-suppression><span class="bad">Yes</span>: Hard bounce, from test, '
        "since "
    ) in page
    assert [row[1:] for row in joined(page, "merges")] == [["#99", "identify"]]


def test_an_unsuppressed_profile_says_so(signed_in):
    ana = ProfileFactory(email="ana@example.com")

    page = signed_in.get(reverse("profile_detail", kwargs={"pk": ana.pk}))

    assert "<td data-suppression>No</td>" in page.content.decode()


def test_the_profile_page_lists_the_segments_the_profile_is_in_now(signed_in):
    ana = ProfileFactory(email="ana@example.com")
    ProfileTag.objects.create(profile=ana, name="Newsletter")
    SegmentFactory(name="Spring sale audience", rule=NEWSLETTER_RULE)
    SegmentFactory(
        name="Buyers", rule={"metric": "order_count", "op": "gt", "value": 0}
    )

    response = signed_in.get(reverse("profile_detail", kwargs={"pk": ana.pk}))

    page = response.content.decode()
    assert (
        '<td data-segments><span class="pill">Spring sale audience</span> </td>' in page
    )


def test_segments_containing_compiles_each_rule_for_the_one_profile():
    ana = ProfileFactory(email="ana@example.com")
    ben = ProfileFactory(email="ben@example.com")
    ProfileTag.objects.create(profile=ana, name="Newsletter")
    readers = SegmentFactory(name="Readers", slug="readers", rule=NEWSLETTER_RULE)
    everyone = SegmentFactory(name="Everyone", slug="everyone", rule={"all": []})
    SegmentFactory(name="Broken", slug="broken", rule={"attribute": "nope"})

    assert segments_containing(ana.pk) == [
        {"id": everyone.pk, "slug": "everyone", "name": "Everyone"},
        {"id": readers.pk, "slug": "readers", "name": "Readers"},
    ]
    assert segments_containing(ben.pk) == [
        {"id": everyone.pk, "slug": "everyone", "name": "Everyone"}
    ]


@pytest.mark.parametrize("query", ["Ana Souza", "  ana   SOUZA ", "a Souz"])
def test_the_profile_search_finds_a_whole_name(signed_in, query):
    ana = ProfileFactory(email="a1@example.com", first_name="Ana", last_name="Souza")
    ProfileFactory(email="a2@example.com", first_name="Ana", last_name="Lee")

    response = signed_in.get(reverse("profile_list"), {"q": query})

    page = response.content.decode()
    assert "1 profile." in page
    assert f'href="{reverse("profile_detail", kwargs={"pk": ana.pk})}"' in page


@pytest.mark.parametrize(
    ("query", "error"),
    [
        (
            {"q": "a" * 201},
            "Search: Ensure this value has at most 200 characters (it has 201).",
        ),
        (
            {"status": "vip"},
            "Status: Select a valid choice. vip is not one of the available choices.",
        ),
    ],
)
def test_a_search_the_list_cannot_run_says_why_and_lists_nobody(
    signed_in, query, error
):
    ProfileFactory(email="ana@example.com")

    response = signed_in.get(reverse("profile_list"), query)

    page = response.content.decode()
    assert error in page
    assert "0 profiles." in page
    assert "ana@example.com" not in page


def test_a_tag_nobody_has_any_more_matches_nobody_without_an_error(signed_in):
    # given a link to the list filtered by a tag whose last holder lost it
    ProfileFactory(email="ana@example.com")

    response = signed_in.get(reverse("profile_list"), {"tag": "Gone"})

    page = response.content.decode()
    assert "data-search-error" not in page
    assert "No profiles match." in page
    assert "ana@example.com" not in page
    # The list shows what it is filtered by, so searching again keeps it.
    assert '<option value="Gone" selected>Gone</option>' in page


def test_a_tag_written_in_another_case_is_chosen_in_the_list_spelling(signed_in):
    ana = ProfileFactory(email="ana@example.com")
    ProfileTag.objects.create(profile=ana, name="VIP")

    response = signed_in.get(reverse("profile_list"), {"tag": "vip"})

    page = response.content.decode()
    assert "ana@example.com" in page
    assert '<option value="VIP" selected>VIP</option>' in page
    assert 'value="vip"' not in page


@pytest.mark.parametrize(
    ("status", "said"), [("subscribed", True), ("unsubscribed", False)]
)
def test_the_status_line_speaks_of_repeated_subscriptions_only_when_subscribed(
    signed_in, status, said
):
    profile = ProfileFactory(
        subscription_status=status,
        subscription_changed_at=datetime(2025, 3, 1, tzinfo=UTC),
    )

    page = signed_in.get(reverse("profile_detail", kwargs={"pk": profile.pk}))

    assert ("a repeated subscription dates it too" in page.content.decode()) is said


def test_the_profile_search_finds_an_address_as_the_list_shows_it(signed_in):
    erin = ProfileFactory(
        email="erin@bücher.example.com", email_display="erin@xn--bcher-kva.example.com"
    )

    page = signed_in.get(reverse("profile_list"), {"q": "xn--bcher"}).content.decode()

    assert f'href="{reverse("profile_detail", kwargs={"pk": erin.pk})}"' in page


def test_the_people_list_marks_the_suppressed(signed_in):
    from django.utils import timezone

    ProfileFactory(email="sofia@example.com", suppressed_at=timezone.now())
    ProfileFactory(email="ada@example.com")

    page = signed_in.get(reverse("profile_list")).content.decode()

    assert page.count("data-suppressed") == 1


@pytest.mark.parametrize("page", ["profile_list", "profile_detail"])
def test_a_tag_holding_a_comma_reads_as_one_tag(signed_in, page):
    ana = ProfileFactory(email="ana@example.com")
    ProfileTag.objects.create(profile=ana, name="Expo 2024, Boston")
    ProfileTag.objects.create(profile=ana, name="VIP")
    args = [ana.pk] if page == "profile_detail" else []

    html = signed_in.get(reverse(page, args=args)).content.decode()

    cell = re.search(r"<td data-tags>(.*?)</td>", html).group(1)
    assert re.findall(r'<span class="pill">([^<]*)</span>', cell) == [
        "Expo 2024, Boston",
        "VIP",
    ]


def test_the_profile_page_says_how_many_of_the_persons_events_wait(signed_in):
    ana = ProfileFactory(email="ana@example.com")
    for kind, value in [
        (IdentityKind.USER_ID, "u-ana"),
        (IdentityKind.ANONYMOUS_ID, "a1"),
    ]:
        ProfileIdentity.objects.create(profile=ana, kind=kind, value=value)
    done = {"processed_at": WHEN}
    event(ana, 1)  # stored with her profile by the shop, not yet counted
    event(ana, 5, **done)

    def sent(n: int, **ids: str) -> None:
        # Sent by one of her ids: tied to her profile only once processed.
        Event.objects.create(
            message_id=f"sent-{n}",
            type="track",
            timestamp=WHEN,
            received_at=WHEN,
            **ids,
        )

    sent(2, user_id="u-ana")
    sent(3, user_id="u-ana")
    sent(4, anonymous_id="a1")
    sent(6, user_id="u-ben")
    quiet = ProfileFactory(email="cy@example.com")
    event(quiet, 1, **done)

    page = signed_in.get(reverse("profile_detail", kwargs={"pk": ana.pk}))
    calm = signed_in.get(reverse("profile_detail", kwargs={"pk": quiet.pk}))

    said = re.search(
        r"<p class=\"flash error\" data-waiting>(.*?)</p>", page.content.decode()
    )
    assert said is not None
    assert said.group(1).startswith(
        "4 events of this person are waiting to be processed, the oldest since "
    )
    assert "data-waiting" not in calm.content.decode()


def test_the_flag_of_a_non_ascii_mailbox_reads_as_bespokes_not_as_undeclared(
    signed_in,
):
    helene = ProfileFactory(
        email="hélène@example.fr", traits={"email_needs_smtputf8": True, "vip": True}
    )

    page = signed_in.get(reverse("profile_detail", kwargs={"pk": helene.pk}))

    rows = joined(page.content.decode(), "traits")
    assert rows == [
        [
            "email_needs_smtputf8",
            "true",
            "set by Bespoke: the mailbox name of the address is not ASCII, and "
            "most email providers cannot send to it",
        ],
        ["vip", "true", "not declared"],
    ]


def test_the_profile_page_says_which_orders_another_currency_leaves_out(signed_in):
    ana = ProfileFactory(email="ana@example.com")
    processed = {"processed_at": WHEN}
    event(ana, 1, event="Order Completed", properties={"order_id": 1, "total": 9})
    for n, currency in ((2, "eur"), (3, "EUR"), (4, "GBP"), (5, "usd")):
        properties = {"order_id": n, "total": 10, "currency": currency}
        event(ana, n, event="Order Completed", properties=properties, **processed)
    # The site and the shop reporting one order (2 and 2.0 alike): one order.
    event(
        ana,
        6,
        message_id="again",
        event="Order Completed",
        properties={"order_id": 2.0, "total": 10, "currency": "EUR"},
        **processed,
    )

    page = signed_in.get(reverse("profile_detail", kwargs={"pk": ana.pk}))

    assert (
        "data-other-currencies>2 orders in EUR, 1 order in GBP: counted in the "
        "orders, but not in lifetime value or the average, which add up orders in "
        "USD only.</p>"
    ) in page.content.decode()
    quiet = ProfileFactory(email="bo@example.com")
    page = signed_in.get(reverse("profile_detail", kwargs={"pk": quiet.pk}))
    assert "data-other-currencies" not in page.content.decode()
