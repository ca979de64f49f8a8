"""Marketer pages about profiles: the list with search, one person's whole story, and
merging two profiles of one person by hand."""

import json
import logging
import math
from decimal import MAX_EMAX, Context, Decimal
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import messages as flash
from django.contrib.auth.models import AbstractBaseUser
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import Count, Exists, Min, OuterRef, Q, QuerySet, Value
from django.db.models.functions import Concat
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.formats import date_format
from django.utils.timezone import localtime
from django.views.decorators.http import require_http_methods

from profiles.access import staff_required
from profiles.emails import SMTPUTF8_TRAIT
from profiles.forms import ProfileMergeForm, ProfileSearchForm
from profiles.models import (
    PERSON_FIELDS,
    Event,
    EventType,
    IdentityKind,
    Profile,
    ProfileMerge,
    ProfileTag,
    ShopOrder,
    TraitType,
)
from profiles.names import tag_key, tags_distinct

# The event path's own rules for which profile is kept and which pairs cannot be
# one person, so that the confirmation shows what the merge will do.
from profiles.processing_identities import (
    MergeRefused,
    merge_check,
    merge_order,
    merge_values_taken,
    merge_withdrawal_carried,
    profile_merge,
)
from profiles.processing_traits import order_key
from profiles.selectors import (
    address_suppression,
    profile_events_waiting,
    profile_find,
    profile_merged_into,
    profile_suppressed,
)
from profiles.signals import profiles_changed
from profiles.traits import trait_schema_load
from segments.expressions import Caseless
from segments.selectors import segments_containing

PROFILES_PER_PAGE = 50
EVENTS_PER_PAGE = 50
PRODUCT_NAMES_SHOWN = 3

logger = logging.getLogger(__name__)


class ProfileFilterForm(ProfileSearchForm):
    # Any name is a valid filter: a tag nobody has (any more) matches nobody.
    tag = forms.CharField(required=False, max_length=100, widget=forms.Select)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # One choice per tag, in its most used spelling ("VIP" and "vip" are one).
        spellings = (
            ProfileTag.objects.values("name")
            .annotate(uses=Count("id"), first=Min("id"))
            .order_by("-uses", "first")
            .values_list("name", flat=True)
        )
        names = sorted(tags_distinct(spellings), key=tag_key)
        wanted = self.data.get("tag", "") if self.is_bound else ""
        if wanted:
            # The list shows the tag it is filtered by: in the spelling the choices
            # use ("vip" is "VIP"), or as written when nobody has it any more.
            same = next((n for n in names if tag_key(n) == tag_key(wanted)), None)
            if same is None:
                names.append(wanted)
            elif same != wanted:
                self.data = self.data.copy()
                self.data["tag"] = same
        self.fields["tag"].widget.choices = [("", "Any tag"), *((n, n) for n in names)]


@staff_required
def profile_list(request: HttpRequest) -> HttpResponse:
    form = ProfileFilterForm(request.GET)
    profiles = Profile.objects.prefetch_related("tags").order_by("-created_at", "-pk")
    if form.is_valid():
        profiles = _profiles_filter(profiles, **form.cleaned_data)
    else:
        # The page says what is wrong with the search; it lists nobody rather
        # than everyone, which would look like a search that found them all.
        profiles = profiles.none()

    page = Paginator(profiles, PROFILES_PER_PAGE).get_page(request.GET.get("page"))
    context = {"form": form, "page": page, "query": _query_without_page(request)}
    return render(request, "profiles/profile_list.html", context)


def _query_without_page(request: HttpRequest) -> str:
    query = request.GET.copy()
    query.pop("page", None)
    return query.urlencode()


def _profiles_filter(
    profiles: QuerySet[Profile], *, q: str, status: str, tag: str
) -> QuerySet[Profile]:
    q = q.strip()
    if q:
        matches = (
            Q(email__icontains=q)
            # As the list shows it: an address written in punycode, say.
            | Q(email_display__icontains=q)
            | Q(first_name__icontains=q)
            | Q(last_name__icontains=q)
            | Q(tags__name__iexact=q)
        )
        if " " in q:
            # A whole name: "Ana Souza", as the list shows it.
            words = " ".join(q.split())
            full_name = Concat("first_name", Value(" "), "last_name")
            matches |= Q(
                pk__in=Profile.objects.alias(full_name=full_name)
                .filter(full_name__icontains=words)
                .values("pk")
            )
        # The one profile the text names outright, as the merge and "why" boxes
        # read it: #id, an address in any of its forms, a userId or anonymousId.
        named = profile_find(q)
        if named is not None:
            matches |= Q(pk=named.pk)
        profiles = profiles.filter(matches).distinct()
    if status:
        profiles = profiles.filter(subscription_status=status)
    if tag:
        # Caseless as segment rules compare tags: on SQLite too, any letter.
        tagged = ProfileTag.objects.annotate(key=Caseless("name")).filter(
            profile=OuterRef("pk"), key=Caseless(Value(tag))
        )
        profiles = profiles.filter(Exists(tagged))
    return profiles


@staff_required
def profile_detail(request: HttpRequest, pk: int) -> HttpResponse:
    profile = Profile.objects.filter(pk=pk).first()
    if profile is None:
        # A profile merged away: its page is the kept one's, which records it.
        merge = profile_merged_into(pk)
        if merge is None:
            raise Http404(f"There is no profile #{pk}.")
        flash.info(request, f"Profile #{pk} was merged into #{merge.kept_id}.")
        return redirect("profile_detail", pk=merge.kept_id)

    events = profile.events.order_by("-timestamp", "-pk")
    page = Paginator(events, EVENTS_PER_PAGE).get_page(request.GET.get("page"))
    context = {
        "profile": profile,
        "computed": _computed_traits(profile),
        "other_currencies": _order_currencies_left_out(profile),
        "traits": _custom_traits(profile),
        "tags": profile.tags.order_by("name"),
        "identities": profile.identities.order_by("kind", "created_at", "pk"),
        "consents": profile.consent_records.order_by("-occurred_at", "-pk"),
        "suppressed": profile_suppressed(profile),
        # Why, from where and since when: the list's entry for the address.
        "listed": address_suppression(profile.email) if profile.email else None,
        "merges": profile.merges.order_by("-merged_at", "-pk"),
        "merge_form": ProfileMergeForm(profile=profile),
        "segments": segments_containing(profile.pk),
        "waiting": profile_events_waiting(profile),
        "page": page,
        "timeline": [_timeline_row(event) for event in page],
    }
    return render(request, "profiles/profile_detail.html", context)


def _computed_traits(profile: Profile) -> list[tuple[str, Any]]:
    return [
        ("Lifetime value", profile.lifetime_value),
        ("Orders", profile.order_count),
        # Over the orders that had an amount in the currency: not always every order.
        ("Average order (of orders in lifetime value)", profile.average_order_value),
        ("First order", profile.first_order_at),
        ("Last order", profile.last_order_at),
        ("Last seen", profile.last_seen_at),
        ("Last open", profile.last_opened_at),
        ("Last click", profile.last_clicked_at),
        ("Engagement score", profile.engagement_score),
        ("Favourite category", profile.favourite_category),
    ]


def _order_currencies_left_out(profile: Profile) -> str:
    """Say which of the person's orders are in another currency than BESPOKE_CURRENCY.

    Such an order counts as an order but adds nothing to lifetime value
    (processing_traits): the page says so, or the value would read as a fault. An
    order is one by its order_id, as there (each report without one is an order of
    its own), and left out only if no report of it is in our currency or none.
    """
    ours = settings.BESPOKE_CURRENCY.upper()
    reported = profile.events.filter(
        type=EventType.TRACK,
        event="Order Completed",
        processed_at__isnull=False,
        processing_error="",
    ).values_list("pk", "properties")
    currencies: dict[str, set[str]] = {}
    for pk, properties in reported:
        properties = properties if isinstance(properties, dict) else {}
        key = order_key(properties, event_id=pk)
        currency = str(properties.get("currency") or "").upper()
        currencies.setdefault(key, set()).add(currency)
    tests = set(
        ShopOrder.objects.filter(is_test=True, shop_id__in=currencies).values_list(
            "shop_id", flat=True
        )
    )
    left_out: dict[str, int] = {}
    for key, found in currencies.items():
        if key in tests or found & {"", ours}:
            continue
        for currency in sorted(found)[:1]:
            left_out[currency] = left_out.get(currency, 0) + 1
    if not left_out:
        return ""
    listed = ", ".join(
        f"{n} order{'s' if n != 1 else ''} in {currency}"
        for currency, n in sorted(left_out.items())
    )
    return (
        f"{listed}: counted in the orders, but not in lifetime value or the average, "
        f"which add up orders in {ours} only."
    )


def _custom_traits(profile: Profile) -> list[dict[str, Any]]:
    schema = trait_schema_load()
    labels = dict(TraitType.choices)
    rows = []
    for name, value in sorted(profile.traits.items()):
        rule = schema.get(name)
        declared = labels.get(rule.type, rule.type) if rule else ""
        if name == SMTPUTF8_TRAIT and not rule:
            # Bespoke's own flag, not a trait someone forgot to declare.
            declared = SMTPUTF8_SHOWN
        rows.append({"name": name, "value": trait_shown(value), "type": declared})
    return rows


SMTPUTF8_SHOWN = (
    "set by Bespoke: the mailbox name of the address is not ASCII, and most email "
    "providers cannot send to it"
)


def trait_shown(value: Any) -> str:
    """Return a trait's value as it was sent: JSON, not Python's spelling of it."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 1e21:
        # The database keeps 1e308 as its 309 digits; shown as a site would.
        shown = Context(prec=15, Emax=MAX_EMAX).plus(Decimal(value)).normalize()
        return format(shown, "g")
    return json.dumps(value, ensure_ascii=False)


def _amount_shown(value: Any) -> str:
    # A shop sends 75.0 for 75.00: a JSON number with a fraction is shown with its
    # cents, as money is written; a whole number or a text amount as it was sent.
    if isinstance(value, float) and math.isfinite(value):
        return f"{Decimal(str(value)):.2f}"
    return str(value)


# An identify's traits on the timeline: this many, each name and value cut to this
# length.
TRAITS_SHOWN = 4
TRAIT_VALUE_SHOWN = 40


def _cut(text: str) -> str:
    return text if len(text) <= TRAIT_VALUE_SHOWN else f"{text[:TRAIT_VALUE_SHOWN]}…"


def _timeline_row(event: Event) -> dict[str, Any]:
    return {
        "event": event,
        "title": event.event or event.name or event.get_type_display(),
        "details": _event_details(event),
        "source": _source_shown(event.source),
    }


def _source_shown(source: str) -> str:
    # Where it came from, so that the site's and the shop's report of one order
    # read as two reports: "site (write key “demo”)", "Shopify", "ESP (sendgrid)".
    kind, _, name = source.partition(":")
    if kind == "segment":
        if name == "settings":
            return "site (a write key of the settings)"
        return f"site (write key “{name}”)" if name else "site"
    return {"shopify": "Shopify", "esp": f"ESP ({name})" if name else "ESP"}.get(
        kind, source
    )


def _event_details(event: Event) -> list[tuple[str, str]]:
    """Return the few properties a marketer reads an event by, as label and text."""
    properties = event.properties if isinstance(event.properties, dict) else {}
    details = []
    traits = event.traits if isinstance(event.traits, dict) else {}
    if event.type == EventType.IDENTIFY and traits:
        # What the identify said of the person: the first few traits, as sent.
        shown = [
            f"{_cut(name)} {_cut(trait_shown(value))}"
            for name, value in sorted(traits.items())[:TRAITS_SHOWN]
        ]
        more = len(traits) - TRAITS_SHOWN
        details.append(
            ("said", "; ".join(shown) + (f"; {more} more" if more > 0 else ""))
        )

    # What tells two reports of one order apart from two orders (lifetime value
    # counts an order_id once), and a refund from its order.
    # A checkout's order_id (the spec's name) is the checkout's, not an order's.
    checkout = event.event.startswith("Checkout")
    for key, label in (("order_id", "order"), ("refund_id", "refund")):
        if properties.get(key) not in (None, ""):
            shown = "checkout" if checkout and key == "order_id" else label
            details.append((shown, str(properties[key])))
    products = _product_names(properties)
    if products:
        details.append(("product", products))

    # Labelled by the property's own name: an order's total is not a view's value.
    amount = next((k for k in ("total", "revenue", "value") if k in properties), None)
    if amount is not None:
        currency = properties.get("currency", "")
        details.append(
            (amount, f"{_amount_shown(properties[amount])} {currency}".strip())
        )
    if "previous_total" in properties:
        # The shop's edit of an order: what it was worth before.
        details.append(("was", _amount_shown(properties["previous_total"])))
    if properties.get("category"):
        details.append(("category", str(properties["category"])))

    path = properties.get("path") or _page_path(event.context)
    if path:
        details.append(("page", str(path)))
    if properties.get("query"):
        details.append(("search", str(properties["query"])))
    if properties.get("link_url"):
        details.append(("link", str(properties["link_url"])))
    # An ESP's report: which campaign, and what the receiving server answered.
    if event.event.startswith("Email ") and properties.get("campaign_id"):
        details.append(("campaign", str(properties["campaign_id"])))
    if properties.get("reason"):
        details.append(("reason", str(properties["reason"])))
    if _flagged(properties, event.context, "machine_open", "sg_machine_open"):
        details.append(("machine open", "not counted as an open"))
    return details


def _flagged(properties: dict[str, Any], context: Any, *names: str) -> bool:
    # As computed traits read the flag: true, or the text "true".
    context = context if isinstance(context, dict) else {}
    flags = [properties.get(name) for name in names] + [context.get(names[0])]
    return any(flag is True or flag == "true" for flag in flags)


def _product_names(properties: dict[str, Any]) -> str:
    if "product_id" in properties and properties.get("name"):
        return str(properties["name"])

    products = properties.get("products")
    if not isinstance(products, list):
        return ""

    names = [str(p["name"]) for p in products if isinstance(p, dict) and p.get("name")]
    shown = ", ".join(names[:PRODUCT_NAMES_SHOWN])
    more = len(names) - PRODUCT_NAMES_SHOWN
    return f"{shown} and {more} more" if more > 0 else shown


def _page_path(context: Any) -> str:
    page = context.get("page") if isinstance(context, dict) else None
    return str(page.get("path") or "") if isinstance(page, dict) else ""


class ProfileGone(Exception):
    """A profile of a merge was merged away or erased after the marketer chose it."""


@staff_required
@require_http_methods(["GET", "POST"])
def profile_merge_page(request: HttpRequest, pk: int) -> HttpResponse:
    """Name the other profile (GET), see both and which is kept, then merge (POST)."""
    profile = get_object_or_404(Profile, pk=pk)
    data = request.POST if request.method == "POST" else request.GET or None
    form = ProfileMergeForm(data, profile=profile)
    if not form.is_valid():
        return _merge_page_render(request, profile, form)

    other = form.cleaned_data["other"]
    kept, merged = merge_order(profile, other)
    try:
        # A marketer saying two profiles are one person is explicit, as an alias is:
        # two user ids may join; two addresses still cannot (a profile has one).
        merge_check(kept, merged, explicit=True)
    except MergeRefused as exc:
        return _merge_refused(request, profile, form, _refusal(kept, merged, exc))
    if request.method == "GET":
        return _merge_page_render(request, profile, form, kept=kept, merged=merged)

    try:
        kept = _merge_by_hand(profile, other, user=request.user)
    except MergeRefused as exc:
        return _merge_refused(request, profile, form, _refusal(kept, merged, exc))
    except ProfileGone:
        gone = (
            f"Profile #{merged.pk} or #{kept.pk} no longer exists: an event may have "
            "merged it into another profile meanwhile. Look the profile up again."
        )
        return _merge_refused(request, profile, form, gone)

    flash.success(
        request,
        f"Profile #{merged.pk} ({_profile_label(merged)}) is merged into "
        f"#{kept.pk} ({_profile_label(kept)}), which is kept.",
    )
    return redirect("profile_detail", pk=kept.pk)


def _merge_by_hand(
    profile: Profile, other: Profile, *, user: AbstractBaseUser
) -> Profile:
    """Merge two profiles as the event path does, in one transaction; return the kept."""
    reason = f"merged by hand by {user.get_username()}"
    with transaction.atomic():
        # Locked in profile_merge's order before it runs: an event may have merged
        # either profile away since the marketer chose it.
        pair = [profile.pk, other.pk]
        locked = Profile.objects.select_for_update().filter(pk__in=pair).order_by("pk")
        if len(locked) != 2:
            raise ProfileGone

        kept = profile_merge(first=profile, second=other, reason=reason, explicit=True)
        # As after an identify or an alias: every segment reads the kept profile again.
        transaction.on_commit(
            lambda: profiles_changed.send(
                sender=ProfileMerge, profile_ids=[kept.pk], changed=None
            )
        )

    logger.info(
        "Profiles merged by hand", extra={"kept_profile": kept.pk, "user_id": user.pk}
    )
    return kept


def _refusal(kept: Profile, merged: Profile, exc: MergeRefused) -> str:
    return (
        f"Profiles #{kept.pk} and #{merged.pk} cannot be merged: {exc}. A profile "
        "keeps one address: if they are one person, remove the wrong address from "
        "one of them in the admin first."
    )


def _merge_refused(
    request: HttpRequest, profile: Profile, form: ProfileMergeForm, message: str
) -> HttpResponse:
    form.add_error("other", message)
    return _merge_page_render(request, profile, form)


def _merge_page_render(
    request: HttpRequest,
    profile: Profile,
    form: ProfileMergeForm,
    *,
    kept: Profile | None = None,
    merged: Profile | None = None,
) -> HttpResponse:
    context: dict[str, Any] = {"profile": profile, "form": form}
    if kept is not None and merged is not None:
        context["kept"] = _merge_side(kept)
        context["merged"] = _merge_side(merged)
        context["kept_because"] = (
            "it has an email address"
            if kept.email and not merged.email
            else "it is the older profile"
        )
        context["taken"] = _merge_values_shown(kept, merged)
    return render(request, "profiles/profile_merge.html", context)


def _merge_values_shown(kept: Profile, merged: Profile) -> list[dict[str, Any]]:
    # What the kept profile will take from the merged one: its blanks, and what the
    # person told the merged profile later (processing_identities.merge_values_taken).
    taken = merge_values_taken(kept=kept, merged=merged)
    shown = []
    for name in PERSON_FIELDS:
        if name in taken:
            label = Profile._meta.get_field(name).verbose_name.capitalize()
            shown.append(
                {
                    "name": label,
                    "kept": getattr(kept, name) or EMPTY_SHOWN,
                    "merged": getattr(merged, name) or EMPTY_SHOWN,
                }
            )
    for key in sorted(taken - set(PERSON_FIELDS)):
        held = _json_shown(kept.traits[key]) if key in kept.traits else NONE_SHOWN
        shown.append(
            {"name": key, "kept": held, "merged": _json_shown(merged.traits[key])}
        )
    # What a privacy admin most needs to see first: whether the person may still be
    # emailed once the profiles are one.
    if merge_withdrawal_carried(kept=kept, merged=merged):
        shown.append(
            {
                "name": "Email consent",
                "kept": _status_shown(kept),
                "merged": _status_shown(merged),
            }
        )
    if kept.suppressed_at is None and merged.suppressed_at is not None:
        shown.append(
            {
                "name": "Suppressed",
                "kept": "No",
                "merged": f"Yes, since {date_format(localtime(merged.suppressed_at))}",
            }
        )
    return shown


def _status_shown(profile: Profile) -> str:
    status = profile.get_subscription_status_display()
    if profile.subscription_changed_at is None:
        return status
    return f"{status}, as of {date_format(localtime(profile.subscription_changed_at))}"


# How the merge confirmation shows an empty field, and a trait a profile lacks.
EMPTY_SHOWN = "(empty)"
NONE_SHOWN = "(none)"


def _json_shown(value: Any) -> str:
    # A trait as it was sent, in JSON: "true", "0", "null" and "[]" are values.
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _merge_side(profile: Profile) -> dict[str, Any]:
    user_ids = profile.identities.filter(kind=IdentityKind.USER_ID)
    return {
        "profile": profile,
        "label": _profile_label(profile),
        "events": profile.events.count(),
        "user_ids": list(user_ids.values_list("value", flat=True)),
    }


def _profile_label(profile: Profile) -> str:
    return profile.address_shown or "no email address"
