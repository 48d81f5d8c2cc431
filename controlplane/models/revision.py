from django.db import models


class Revision(models.Model):
    """A counter per organization, bumped in the same transaction as every control-plane
    change. Evaluation caches the authority snapshot in memory and reloads it when the
    counter moves, so a revoked grant or an approved version takes effect at once."""

    organization = models.OneToOneField(
        "governance.Organization", primary_key=True, on_delete=models.CASCADE, related_name="+"
    )
    number = models.BigIntegerField(default=0)

    def __str__(self):
        return f"revision {self.number}"
