"""Print where the app is served and how to sign in (the last words of `make run`)."""

from django.conf import settings
from django.core.management.base import BaseCommand

from campaigns import demo


class Command(BaseCommand):
    help = "Print the URL and the demo sign-in."

    def handle(self, *args, **options) -> None:
        self.stdout.write("")
        self.stdout.write(
            self.style.SUCCESS("Bespoke is starting (web, worker and beat).")
        )
        self.stdout.write(f"  Open      {settings.BESPOKE_PUBLIC_URL}/")
        self.stdout.write(f"  Sign in   {demo.DEMO_USERNAME} / {demo.DEMO_PASSWORD}")
        self.stdout.write(f"  Write key {demo.DEMO_WRITE_KEY} (for POST /v1/batch)")
        self.stdout.write("  Stop with Ctrl-C.")
        self.stdout.write("")
