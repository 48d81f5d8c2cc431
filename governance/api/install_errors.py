"""How each installer refusal answers (docs/installs.md): edut's body
``{"error": code, "code": code, "correlation_id": "req_..."}`` with this status."""

INSTALL_STATUS = {
    "invalid_request": 400,
    "address_checksum_invalid": 400,
    "launcher_receipt_invalid": 400,
    "renewal_bundle_invalid": 400,
    "renewal_bundle_expired": 400,
    "wallet_session_invalid": 401,
    "wallet_mismatch": 403,
    "wallet_not_owner": 403,
    "membership_inactive": 403,
    "role_not_permitted": 403,
    "entitlement_inactive": 403,
    "availability_parked": 403,
    "organization_not_found": 404,
    "principal_not_found": 404,
    "package_not_found": 404,
    "device_not_found": 404,
    "install_token_stale": 409,
    "policy_mismatch": 409,
    "package_hash_mismatch": 409,
    "device_not_installed": 409,
    "renewal_bundle_used": 409,
    "signing_key_unstable": 503,
}
