"""Signals other apps listen to when segment membership moves.

- ``segment_membership_changed``: sent after commit with ``changes``, a list of
  segments.membership.MembershipChange, when one profile entered or left segments
  (the real-time path, profile_memberships_refresh).
- ``segment_refreshed``: sent after commit with ``segment_id``, ``result`` (a
  RefreshResult) and ``at`` when a whole segment was refreshed. The stays that
  entered have ``entered_at == at`` and those that left ``left_at == at``, so a
  receiver reads them from the database instead of receiving a list that may hold
  a million rows.
"""

from django.dispatch import Signal

segment_membership_changed = Signal()
segment_refreshed = Signal()
