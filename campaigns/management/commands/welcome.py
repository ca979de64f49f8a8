"""Print where the app is served and how to sign in (the last words of `make run`)."""

from django.conf import settings
from django.core.management.base import BaseCommand

from campaigns import demo
from profiles.models import WriteKey


class Command(BaseCommand):
    help = "Print the URL and the demo sign-in."

    def handle(self, *args, **options) -> None:
        self.stdout.write("")
        self.stdout.write(
            self.style.SUCCESS("Bespoke is starting (web, worker and beat).")
        )
        self.stdout.write(f"  Open      {settings.BESPOKE_PUBLIC_URL}/")
        self.stdout.write(f"  Sign in   {demo.DEMO_USERNAME} / {demo.DEMO_PASSWORD}")
        self.stdout.write(f"  Write key {self._write_key_words()}")
        self.stdout.write("  Stop with Ctrl-C.")
        self.stdout.write("")

    def _write_key_words(self) -> str:
        # A key revoked on the Sources page stays revoked: the demo makes it only
        # once, and printing it would send a newcomer to a 401.
        key = WriteKey.objects.filter(key=demo.DEMO_WRITE_KEY).first()
        if key is None:
            return "none yet: make one under Sources, Write keys"
        if key.revoked_at is not None:
            return (
                f"{demo.DEMO_WRITE_KEY} was revoked: make another under Sources, "
                "Write keys"
            )
        return f"{demo.DEMO_WRITE_KEY} (for POST /v1/batch)"
