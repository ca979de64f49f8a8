"""Marketer pages about the trait schema: declared custom traits and their rules."""

import logging
import re
from decimal import Decimal, InvalidOperation
from typing import Any

import regex
from django import forms
from django.contrib import messages
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods

from profiles.access import staff_required
from profiles.health import (
    TRAIT_CHECK_BUDGET_SECONDS,
    TRAIT_CHECK_MAX_VALUES,
    trait_names_undeclared,
    trait_rule_breaches,
)
from profiles.models import Profile, TraitDefinition, TraitType
from profiles.trait_values import trait_values_conform_request
from profiles.traits import (
    NUMBER_MAX_DIGITS,
    NUMBER_SMALLEST,
    TraitInvalid,
    TraitRule,
    number_in_range,
    number_plain,
    number_text,
    trait_coerce,
    trait_name_is_reserved,
    trait_pattern_compile,
    trait_rule_of,
    value_caseless,
)

logger = logging.getLogger(__name__)

# What a segment rule can name after "traits." (segments.language.TRAIT_PATH) and
# what an import makes of a column's name: letters of any alphabet, digits, "_".
TRAIT_NAME_PATTERN = re.compile(r"\w{1,100}")


def trait_name_declarable(name: str) -> bool:
    """Whether a trait of this name can be declared (see TraitDefinitionForm)."""
    return bool(TRAIT_NAME_PATTERN.fullmatch(name)) and not trait_name_is_reserved(name)


class RuleNumberField(forms.DecimalField):
    """A bound of a number rule, read with the grammar and range values are read with."""

    def to_python(self, value: Any) -> Decimal | None:
        if value in self.empty_values:
            return None
        text = number_text(value)
        if text is None:
            raise forms.ValidationError(
                f"“{value}” is not a number: use the digits 0 to 9, a sign, a decimal "
                "point and an exponent, and spaces only between thousands.",
                code="invalid",
            )
        try:
            number = Decimal(text)
        except InvalidOperation:
            number = Decimal("Infinity")
        if not number_in_range(number):
            raise forms.ValidationError(
                f"“{value}” is out of range: a number other than 0 has at most "
                f"{NUMBER_MAX_DIGITS} digits before the point and is at least "
                f"{NUMBER_SMALLEST:f} in size.",
                code="invalid",
            )
        return number


class TraitDefinitionForm(forms.ModelForm):
    allowed_values = forms.CharField(
        required=False,
        label="Allowed values",
        help_text="Comma-separated, or one a line; leave empty to allow any value.",
    )

    class Meta:
        model = TraitDefinition
        field_classes = {"minimum": RuleNumberField, "maximum": RuleNumberField}
        fields = [
            "name",
            "type",
            "description",
            "allowed_values",
            "minimum",
            "maximum",
            "pattern",
        ]
        labels = {"pattern": "Pattern (regular expression)"}
        help_texts = {
            "pattern": (
                r"The whole value must match. \d is a digit 0 to 9 only (\p{Nd} is "
                r"a digit of any script); \w matches letters of any script (José), "
                r"\s any white space."
            )
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            # As written in the box: no allowed values is an empty box, not "[]",
            # and a bound of 5 is "5", not the column's "5.000000".
            values = ", ".join(map(str, self.instance.allowed_values or []))
            self.initial["allowed_values"] = values
            for bound in ("minimum", "maximum"):
                # As text: a Decimal would show 0.0000001 as "1E-7".
                number = number_plain(getattr(self.instance, bound))
                self.initial[bound] = None if number is None else f"{number:f}"
            # The name is the key the sources send: another name is another trait,
            # whose values are elsewhere, so it is declared apart.
            self.fields["name"].disabled = True
            self.fields["name"].help_text = (
                "The name sources send the trait under; to declare another name, "
                "declare a new trait."
            )

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if not TRAIT_NAME_PATTERN.fullmatch(name):
            raise forms.ValidationError(
                f"“{name}” is not a trait name: use up to 100 letters, digits and "
                "underscores."
            )
        if trait_name_is_reserved(name):
            raise forms.ValidationError(
                f"“{name}” is a profile field, not a custom trait: its value is kept "
                "on the profile itself, so it cannot be declared."
            )
        twin = (
            TraitDefinition.objects.filter(name__iexact=name)
            .exclude(name=name)
            .exclude(pk=self.instance.pk)
            .values_list("name", flat=True)
            .first()
        )
        if twin is not None:
            raise forms.ValidationError(
                f"“{name}” differs from the declared trait “{twin}” only in case: "
                "the segment builder and templates would offer both. Edit that one, "
                "or have the source send one spelling."
            )
        return name

    def clean_pattern(self) -> str:
        pattern = self.cleaned_data["pattern"]
        try:
            # As values are checked against it (profiles/traits.py).
            trait_pattern_compile(pattern)
        except regex.error as exc:
            raise forms.ValidationError(
                f"The pattern is not a valid regular expression: {exc}."
            ) from exc
        return pattern

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        kind = cleaned.get("type")
        if not kind:
            return cleaned

        self._rules_fit_type(kind, cleaned)
        self._range_check(cleaned.get("minimum"), cleaned.get("maximum"))
        cleaned["allowed_values"] = self._allowed_values(kind, cleaned)
        return cleaned

    def _rules_fit_type(self, kind: str, cleaned: dict[str, Any]) -> None:
        if kind != TraitType.NUMBER:
            for name in ("minimum", "maximum"):
                if cleaned.get(name) is not None:
                    self.add_error(
                        name, "A minimum or maximum applies to numbers only."
                    )
        if kind != TraitType.TEXT and cleaned.get("pattern"):
            self.add_error("pattern", "A pattern applies to text traits only.")

    def _range_check(self, minimum: Decimal | None, maximum: Decimal | None) -> None:
        if minimum is not None and maximum is not None and minimum > maximum:
            self.add_error(
                "maximum", f"The maximum ({maximum}) is below the minimum ({minimum})."
            )

    def _allowed_values(self, kind: str, cleaned: dict[str, Any]) -> list[Any]:
        # Stored typed, as trait_coerce will compare them with coerced values.
        # Commas, or line breaks: a list pasted one value a line is as many values.
        written = cleaned.get("allowed_values") or ""
        texts = [t.strip() for t in re.split(r"[,\r\n]", written)]
        rule = TraitRule(name=cleaned.get("name") or "value", type=kind)
        values: list[Any] = []
        for text in filter(None, texts):
            try:
                value = trait_coerce(rule, text)
            except TraitInvalid as exc:
                self.add_error("allowed_values", exc.message)
                continue
            if value in values:
                continue
            twin = _same_but_case(value, values)
            if twin is not None:
                # Values are matched in any case, so these would be one value.
                self.add_error(
                    "allowed_values",
                    f"'{value}' and '{twin}' differ only in case or in how an "
                    "accent is written; keep one of them.",
                )
                continue
            values.append(value)
        return values


def _same_but_case(value: Any, values: list[Any]) -> Any:
    if not isinstance(value, str):
        return None
    # As trait values are matched (profiles.traits.allowed_spelling).
    folded = value_caseless(value)
    return next(
        (v for v in values if isinstance(v, str) and value_caseless(v) == folded),
        None,
    )


@staff_required
def trait_list(request: HttpRequest) -> HttpResponse:
    definitions = TraitDefinition.objects.order_by("name")
    context = {
        "definitions": [
            {"definition": d, "rule": trait_rule_of(d)} for d in definitions
        ],
        "undeclared": [
            {**trait, "declarable": trait_name_declarable(trait["name"])}
            for trait in trait_names_undeclared()
        ],
    }
    return render(request, "profiles/traits_list.html", context)


@staff_required
@require_http_methods(["GET", "POST"])
def trait_edit(request: HttpRequest, pk: int | None = None) -> HttpResponse:
    definition = get_object_or_404(TraitDefinition, pk=pk) if pk else None
    # Read before the form puts the posted values on the definition.
    rule_before = trait_rule_of(definition) if definition else None
    initial = None
    if definition is None:
        # A link may name the trait and its type ("declare birthday as a date").
        initial = {"name": request.GET.get("name", "")}
        if request.GET.get("type") in TraitType.values:
            initial["type"] = request.GET["type"]
    form = TraitDefinitionForm(
        request.POST or None, instance=definition, initial=initial
    )
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            saved = form.save()
            # The values profiles hold were stored under the rule before, or none.
            converting = trait_rule_of(saved) != rule_before
            if converting:
                trait_values_conform_request(trait_definition_id=saved.pk)
        logger.info(
            "Trait definition saved",
            extra={"trait_definition_id": saved.pk, "user_id": request.user.pk},
        )
        messages.success(request, _saved_message(saved.name, converting=converting))
        return redirect("trait_edit", pk=saved.pk)

    context = {
        "form": form,
        "definition": definition,
        "breaches": _breaches(definition) if definition else None,
        # What the page says stopped a check that did not reach every value.
        "check_seconds": TRAIT_CHECK_BUDGET_SECONDS,
        "check_values": f"{TRAIT_CHECK_MAX_VALUES:,}",
    }
    return render(request, "profiles/traits_edit.html", context)


def _saved_message(name: str, *, converting: bool) -> str:
    if not converting:
        return f"The trait “{name}” is saved."
    return (
        f"The trait “{name}” is saved. The values profiles already hold are being "
        "brought to its type: this page says how far that got."
    )


@staff_required
@require_http_methods(["POST"])
def trait_values_convert(request: HttpRequest, pk: int) -> HttpResponse:
    """Convert the trait's stored values to its type again (values sent meanwhile)."""
    definition = get_object_or_404(TraitDefinition, pk=pk)
    with transaction.atomic():
        trait_values_conform_request(trait_definition_id=definition.pk)
    logger.info(
        "Trait values conversion asked",
        extra={"trait_definition_id": definition.pk, "user_id": request.user.pk},
    )
    messages.success(
        request,
        f"The values profiles hold for “{definition.name}” are being brought to its "
        "type again.",
    )
    return redirect("trait_edit", pk=definition.pk)


@staff_required
@require_http_methods(["POST"])
def trait_delete(request: HttpRequest, pk: int) -> HttpResponse:
    """Undeclare a trait: its stored values stay, as an undeclared trait's."""
    definition = get_object_or_404(TraitDefinition, pk=pk)
    name = definition.name
    definition.delete()
    logger.info(
        "Trait definition deleted",
        extra={"trait_definition_id": pk, "trait": name, "user_id": request.user.pk},
    )
    messages.success(
        request,
        f"The trait “{name}” is no longer declared. The values profiles hold are "
        "kept, and listed below as undeclared.",
    )
    return redirect("trait_list")


def _breaches(definition: TraitDefinition) -> dict[str, Any]:
    breaches = trait_rule_breaches(rule=trait_rule_of(definition))
    # Each example named by the person's address, as the people list names them.
    examples = breaches["examples"]
    named = Profile.objects.filter(
        pk__in=[example["profile_id"] for example in examples]
    ).only("email", "email_display")
    emails = {profile.pk: profile.address_shown for profile in named}
    breaches["examples"] = [
        {**example, "email": emails.get(example["profile_id"], "")}
        for example in examples
    ]
    return breaches
