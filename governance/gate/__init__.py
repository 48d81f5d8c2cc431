"""The action gate's identity side (LatchGate-compatible): leases, DPoP proofs, operator keys
and the gate's shared state (drain, revocation epoch). See docs/gate.md."""
