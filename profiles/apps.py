from django.apps import AppConfig


class ProfilesConfig(AppConfig):
    name = "profiles"
    verbose_name = "Profiles and events"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from profiles.deliveries import delivery_applier_register
        from profiles.keys import write_keys_changed
        from profiles.models import TraitDefinition, WriteKey
        from profiles.shopify import SOURCE, shopify_delivery_process
        from profiles.traits import trait_schema_forget

        for changed in (post_save, post_delete):
            changed.connect(trait_schema_forget, sender=TraitDefinition)
            # A key revoked, renamed or deleted in this process is asked for again.
            changed.connect(write_keys_changed, sender=WriteKey)

        # Shopify's source is the bare name: an ESP's is "esp:<name>".
        delivery_applier_register(source_prefix=SOURCE, apply=shopify_delivery_process)
