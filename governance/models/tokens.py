import uuid

from django.db import models

from governance.choices import TokenStatus


class ApiToken(models.Model):
    """A bearer credential for the API. Only a SHA-256 of the secret is stored.

    The secret looks like ``mdt_<prefix>_<random>``; ``prefix`` finds the row, then the
    hash is compared in constant time.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    principal = models.ForeignKey("governance.Person", on_delete=models.CASCADE, related_name="api_tokens")
    roles = models.JSONField(default=list, help_text="Namespaced role names this token carries.")
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    secret_hash = models.CharField(max_length=64, editable=False)
    status = models.CharField(max_length=16, choices=TokenStatus.choices, default=TokenStatus.ACTIVE)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API token"

    def __str__(self):
        return f"{self.name} (mdt_{self.prefix}_…)"
