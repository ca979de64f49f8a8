from django.apps import AppConfig


class ProfilesConfig(AppConfig):
    name = "profiles"
    verbose_name = "Profiles and events"

    def ready(self) -> None:
        from profiles.deliveries import delivery_applier_register
        from profiles.shopify import SOURCE, shopify_delivery_process

        # Shopify's source is the bare name: an ESP's is "esp:<name>".
        delivery_applier_register(source_prefix=SOURCE, apply=shopify_delivery_process)
