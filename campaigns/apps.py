from django.apps import AppConfig


class CampaignsConfig(AppConfig):
    name = "campaigns"

    def ready(self) -> None:
        from anymail.signals import tracking

        from campaigns.tracking import (
            SOURCE_PREFIX,
            esp_event_process,
            esp_tracking_receive,
        )
        from profiles.deliveries import delivery_applier_register

        tracking.connect(esp_tracking_receive, dispatch_uid="bespoke_esp_tracking")
        delivery_applier_register(source_prefix=SOURCE_PREFIX, apply=esp_event_process)
