"""The segment builder's JSON API: preview a rule as it is edited, explain one profile.

Session authentication, staff only. A rule that does not validate gets a 400 whose
'errors' list names each bad node by path, so the editor can point at it.
"""

import math
from typing import Any

from rest_framework import serializers, status
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from segments.language import NUMBER_RANGE, RuleInvalid, rule_describe
from segments.models import Segment
from segments.preview import (
    profile_find,
    rule_condition_counts,
    rule_diff,
    rule_explain,
    rule_preview,
)


class RuleField(serializers.JSONField):
    """A rule as JSON; a number past a float's range is named, not called bad JSON."""

    # The same words the rule check uses for a number out of range.
    default_error_messages = {
        "out_of_range": f"The number at {{path}} is out of range: {NUMBER_RANGE}.",
    }

    def to_internal_value(self, data: Any) -> Any:
        path = _non_finite_path(data, "rule")
        if path is not None:
            self.fail("out_of_range", path=path)
        return super().to_internal_value(data)


def _non_finite_path(value: Any, path: str) -> str | None:
    # JSON's 1e999 reads as infinity, which no rule can compare with.
    if isinstance(value, float) and not math.isfinite(value):
        return path
    if isinstance(value, dict):
        items = ((f"{path}.{key}", item) for key, item in value.items())
    elif isinstance(value, list):
        items = ((f"{path}[{index}]", item) for index, item in enumerate(value))
    else:
        return None
    return next(
        (found for key, item in items if (found := _non_finite_path(item, key))),
        None,
    )


def _errors(errors: list[dict], *, status_code: int = 400) -> Response:
    return Response({"errors": errors}, status=status_code)


def _rule_errors(exc: RuleInvalid) -> Response:
    return _errors([{"path": e.path, "message": e.message} for e in exc.errors])


def _input_errors(serializer: serializers.Serializer) -> Response:
    return _errors(
        [
            {"path": field, "message": str(message)}
            for field, messages in serializer.errors.items()
            for message in messages
        ]
    )


class ProfileRowSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    email = serializers.CharField()
    name = serializers.CharField()
    country = serializers.CharField()


class NodeCountSerializer(serializers.Serializer):
    path = serializers.CharField()
    kind = serializers.CharField()
    description = serializers.CharField()
    count = serializers.IntegerField()


class DiffSerializer(serializers.Serializer):
    unchanged = serializers.BooleanField()
    entering = serializers.IntegerField(required=False)
    leaving = serializers.IntegerField(required=False)
    entering_sample = ProfileRowSerializer(many=True, required=False)
    leaving_sample = ProfileRowSerializer(many=True, required=False)
    saved_rule_error = serializers.CharField(required=False)


class RulePreviewApi(APIView):
    """Count who a rule matches, node by node, and how it differs from the saved one."""

    permission_classes = [IsAdminUser]

    class InputSerializer(serializers.Serializer):
        rule = RuleField()
        segment_id = serializers.IntegerField(required=False, allow_null=True)

    class OutputSerializer(serializers.Serializer):
        matched = serializers.IntegerField()
        eligible = serializers.IntegerField()
        ineligible = serializers.DictField(child=serializers.IntegerField())
        sample = ProfileRowSerializer(many=True)
        conditions = NodeCountSerializer(many=True)
        diff = DiffSerializer(allow_null=True)
        description = serializers.CharField()

    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.InputSerializer(data=request.data)
        if not serializer.is_valid():
            return _input_errors(serializer)

        rule = serializer.validated_data["rule"]
        segment_id = serializer.validated_data.get("segment_id")
        segment = _segment_or_none(segment_id)
        if segment_id is not None and segment is None:
            return _no_segment()

        slug = segment.slug if segment else None
        try:
            preview = rule_preview(rule=rule, slug=slug)
            preview["conditions"] = rule_condition_counts(rule=rule, slug=slug)
            preview["diff"] = rule_diff(segment=segment, rule=rule) if segment else None
        except RuleInvalid as exc:
            return _rule_errors(exc)

        preview["description"] = rule_describe(rule)
        return Response(self.OutputSerializer(preview).data)


class RuleExplainApi(APIView):
    """Say whether one profile (id, email, userId or anonymousId) is in, and why."""

    permission_classes = [IsAdminUser]

    class InputSerializer(serializers.Serializer):
        rule = RuleField()
        profile = serializers.CharField()
        segment_id = serializers.IntegerField(required=False, allow_null=True)

    class OutputSerializer(serializers.Serializer):
        class NodeSerializer(serializers.Serializer):
            path = serializers.CharField()
            kind = serializers.CharField()
            description = serializers.CharField()
            held = serializers.BooleanField()

        class DecidingSerializer(serializers.Serializer):
            path = serializers.CharField()
            description = serializers.CharField()
            held = serializers.BooleanField()

        class ProfileSerializer(serializers.Serializer):
            id = serializers.IntegerField()
            email = serializers.CharField()
            name = serializers.CharField()

        profile = ProfileSerializer()
        nodes = NodeSerializer(many=True)
        decided_by = DecidingSerializer(many=True)
        summary = serializers.CharField()

    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.InputSerializer(data=request.data)
        if not serializer.is_valid():
            return _input_errors(serializer)

        data = serializer.validated_data
        profile = profile_find(data["profile"])
        if profile is None:
            message = (
                "there is no profile with this id, email address, userId or anonymousId"
            )
            return _errors([{"path": "profile", "message": message}], status_code=404)

        segment = _segment_or_none(data.get("segment_id"))
        if data.get("segment_id") is not None and segment is None:
            return _no_segment()

        try:
            explained = rule_explain(
                rule=data["rule"],
                profile_id=profile["id"],
                slug=segment.slug if segment else None,
            )
        except RuleInvalid as exc:
            return _rule_errors(exc)

        body = self.OutputSerializer({**explained, "profile": profile}).data
        # 'in' is a Python keyword, so it cannot be a serializer field's name.
        return Response({"in": explained["in"], **body}, status=status.HTTP_200_OK)


def _segment_or_none(segment_id: int | None) -> Segment | None:
    if segment_id is None:
        return None
    return Segment.objects.filter(pk=segment_id).first()


def _no_segment() -> Response:
    return _errors([{"path": "segment_id", "message": "there is no such segment"}])
