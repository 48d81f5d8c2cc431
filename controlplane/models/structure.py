from django.db import models

from controlplane.choices import BusinessServiceStatus, ServiceType, StructuralStatus
from controlplane.models.base import Declared


def _unique_key(name):
    return [models.UniqueConstraint(fields=["organization", "key"], name=name)]


class BusinessService(Declared):
    service_type = models.CharField(max_length=20, choices=ServiceType.choices, default=ServiceType.INTERNAL)
    regulatory_scope = models.CharField(max_length=255, blank=True)
    status = models.CharField(
        max_length=20, choices=BusinessServiceStatus.choices, default=BusinessServiceStatus.ACTIVE
    )
    owner_id = models.CharField(max_length=255, blank=True)
    external_ref = models.JSONField(null=True, blank=True)  # a string or {source_system, source_id, ...}

    class Meta:
        ordering = ["key"]
        constraints = _unique_key("unique_business_service_key")


class Capability(Declared):
    status = models.CharField(max_length=20, choices=StructuralStatus.choices, default=StructuralStatus.ACTIVE)
    owner = models.CharField(max_length=255, blank=True)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="children")
    business_services = models.ManyToManyField(
        BusinessService, through="BusinessServiceCapability", related_name="capabilities"
    )

    class Meta:
        ordering = ["key"]
        verbose_name_plural = "capabilities"
        constraints = _unique_key("unique_capability_key")


class BusinessServiceCapability(Declared):
    business_service = models.ForeignKey(BusinessService, on_delete=models.PROTECT, related_name="capability_links")
    capability = models.ForeignKey(Capability, on_delete=models.PROTECT, related_name="service_links")

    class Meta:
        ordering = ["key"]
        verbose_name = "business service ↔ capability link"
        constraints = _unique_key("unique_bsc_key") + [
            models.UniqueConstraint(fields=["business_service", "capability"], name="unique_bsc_pair")
        ]


class Process(Declared):
    business_service = models.ForeignKey(BusinessService, on_delete=models.PROTECT, related_name="processes")
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="children")
    status = models.CharField(max_length=20, choices=StructuralStatus.choices, default=StructuralStatus.ACTIVE)
    owner = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ["key"]
        verbose_name_plural = "processes"
        constraints = _unique_key("unique_process_key")
