from entitlements.models.entitlements import Entitlement, IssuanceToken
from entitlements.models.runs import Run, SealRedemption

__all__ = ["Entitlement", "IssuanceToken", "Run", "SealRedemption"]
