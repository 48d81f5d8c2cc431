"""The action gate's catalogue and policy (docs/gate.md, "Catalogue and policy")."""
