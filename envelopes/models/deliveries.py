import uuid

from django.db import models

from envelopes.choices import DeliveryStatus


class Delivery(models.Model):
    """One outbound webhook (transactional outbox): written in the decision's transaction,
    sent by a Celery task, retried on a schedule, swept if its task was lost."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    channel = models.ForeignKey("envelopes.Channel", on_delete=models.CASCADE, related_name="deliveries")
    request = models.ForeignKey(
        "envelopes.ApprovalRequest", on_delete=models.CASCADE, related_name="deliveries", null=True
    )
    event = models.CharField(max_length=40)
    url = models.URLField(max_length=2000)
    body = models.TextField(help_text="The exact bytes that are signed and sent.")
    status = models.CharField(max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(db_index=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_response_excerpt = models.TextField(blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "deliveries"
        indexes = [models.Index(fields=["status", "next_attempt_at"])]

    def __str__(self):
        return f"{self.event} → {self.url} ({self.status})"
