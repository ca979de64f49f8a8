from django.apps import AppConfig


class SegmentsConfig(AppConfig):
    name = "segments"

    def ready(self) -> None:
        from profiles.signals import profiles_changed
        from segments.receivers import memberships_refresh_enqueue

        profiles_changed.connect(memberships_refresh_enqueue, dispatch_uid="segments")
