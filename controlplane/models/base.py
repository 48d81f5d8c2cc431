from django.db import models


class Declared(models.Model):
    """Something an organization declares in a bundle.

    ``key`` is the bundle's ``metadata.id`` (what the MIDAS API calls ``id``), unique per
    organization (per version for versioned kinds). ``spec`` keeps the normalized
    document spec as applied, so a re-apply can be compared field by field.
    """

    organization = models.ForeignKey("governance.Organization", on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    name = models.CharField(max_length=255, blank=True)
    description = models.TextField(blank=True)
    labels = models.JSONField(default=dict, blank=True)
    spec = models.JSONField(default=dict, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True

    def __str__(self):
        version = getattr(self, "version", None)
        return f"{self.key} v{version}" if version else self.key
