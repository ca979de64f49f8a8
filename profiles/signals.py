"""Signals other apps listen to, so that profiles never has to import them."""

from django.dispatch import Signal

# Sent after commit when processing changed profiles. Arguments: `profile_ids`
# (list of ints) and `changed` (a set of dependency words such as
# 'event:Order Completed' or 'metric:lifetime_value', or None for "anything").
profiles_changed = Signal()
