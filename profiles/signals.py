"""Signals other apps listen to, so that profiles never has to import them."""

from django.dispatch import Signal

# Sent after commit when profiles changed. Arguments: `profile_ids` (a list of ints,
# or None when too many changed to name, as after an import) and `changed` (a set of
# dependency words such as 'event:Order Completed' or 'metric:lifetime_value', or
# None for "anything").
profiles_changed = Signal()
