from django.apps import AppConfig


class CampaignsConfig(AppConfig):
    name = "campaigns"

    def ready(self) -> None:
        from anymail.signals import tracking

        from campaigns.tracking import esp_tracking_receive

        tracking.connect(esp_tracking_receive, dispatch_uid="bespoke_esp_tracking")
