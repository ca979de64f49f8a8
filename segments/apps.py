from django.apps import AppConfig


class SegmentsConfig(AppConfig):
    name = "segments"

    def ready(self) -> None:
        from django.db.backends.signals import connection_created

        from profiles.signals import profiles_changed
        from segments.receivers import memberships_refresh_enqueue

        profiles_changed.connect(memberships_refresh_enqueue, dispatch_uid="segments")
        connection_created.connect(_sqlite_functions_add, dispatch_uid="segments")


def _sqlite_functions_add(sender, connection, **kwargs) -> None:
    # Rules compare text lower-cased letter by letter; SQLite's lower() changes
    # only A to Z, so SQLite connections get Bespoke's (see segments.expressions).
    if connection.vendor != "sqlite":
        return
    from segments.expressions import SQLITE_CASELESS

    connection.connection.create_function(
        SQLITE_CASELESS, 1, _sqlite_caseless, deterministic=True
    )


def _sqlite_caseless(value: object) -> str | None:
    # SQLite hands over what the expression holds: text, or a number or a boolean
    # (1 or 0) read out of JSON, which lower() takes as its text.
    from segments.language import caseless

    if value is None or isinstance(value, str):
        return caseless(value)
    if isinstance(value, bytes):
        return caseless(value.decode("utf-8", "replace"))
    return str(value)
