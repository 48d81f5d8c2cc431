# The action gate's policy (docs/gate.md, "Policy").
#
# Default deny. The checks run in order, most restrictive first, and the first that fires
# decides:
#   1. untrusted action        -> deny
#   2. not in the ACL          -> deny
#   3. missing scope           -> deny
#   4. budget exhausted        -> deny
#   5. sink not allowed        -> deny
#   6. denied path             -> deny
#   7. allowlisted pair        -> allow (skips the hold, never a deny above)
#   8. high or critical risk   -> hold
#   9. sensitive path          -> hold
#  10. unresolved path         -> hold
#  11. unresolved domain       -> hold
#  12. otherwise               -> allow
#
# input (built by controlplane/gate/policy.py from a PolicyInput):
#   principal                 the agent id the lease names
#   action                    {action_id, risk_level, side_effects[], required_scopes[], trusted}
#   scopes[]                  the lease's scopes
#   budget                    {limited, exhausted}
#   target                    {sensitive_path, denied_paths[], unresolved_paths[], unresolved_domains[]}
# data.mandate.gate (the policy data, one snapshot per policy_version):
#   acl                       {principal or "*": {actions[], sinks[], inherits_wildcard}}
#   allowlist                 {action_id: {agent_id: true}}
#   policy_version
#
# The result: {result: "allow" | "deny" | "hold", deny_reason?, hold_reason?, sinks[]}.
#
# regopy 1.5 quirk: sprintf's %s renders the result of concat() with its JSON quotes, so
# messages that list things are built with concat() alone.

package mandate.gate

import rego.v1

default decision := {"result": "deny", "deny_reason": "no policy rule allowed the action", "sinks": []}

decision := d if {
	d := _deny_untrusted
} else := d if {
	d := _deny_acl
} else := d if {
	d := _deny_scope
} else := d if {
	d := _deny_budget
} else := d if {
	d := _deny_sink
} else := d if {
	d := _deny_path
} else := d if {
	d := _skip_hold
} else := d if {
	d := _hold
} else := d if {
	d := _allow
}

# 1. Trust: the code the action runs is the code its manifest names.

_deny_untrusted := _deny("untrusted action: provider module digest verification failed") if {
	input.action.trusted != true
}

# 2. ACL: the principal's own grants, the wildcard's when it has no entry, both when it
# inherits the wildcard explicitly.

_deny_acl := _deny(sprintf("principal '%s' is not authorised for action '%s'", [input.principal, input.action.action_id])) if {
	not input.action.action_id in _granted_actions
}

# 3. Scopes: tools:call always, and every scope the action requires.

_deny_scope := _deny(concat("", ["scope 'tools:call' is required but absent from the lease scopes (", _scope_list, ")"])) if {
	not "tools:call" in input.scopes
}

_deny_scope := _deny(concat("", ["lease is missing required scope(s) for action '", input.action.action_id, "': ", concat(", ", sort(_missing_scopes))])) if {
	"tools:call" in input.scopes
	count(_missing_scopes) > 0
}

_scope_list := concat(", ", input.scopes) if count(input.scopes) > 0

else := "none"

_missing_scopes := {scope |
	some scope in input.action.required_scopes
	not scope in input.scopes
}

# 4. Budget.

_deny_budget := _deny("budget exhausted: no calls remaining") if {
	input.budget.exhausted == true
}

# 5. Sinks: every side effect the action declares must be one the principal may cause.

_deny_sink := _deny(concat("", ["disallowed sink(s) for principal '", input.principal, "': ", concat(", ", sort(_disallowed_sinks))])) if {
	count(_disallowed_sinks) > 0
}

_disallowed_sinks := {sink |
	some sink in input.action.side_effects
	not sink in _allowed_sinks
}

# 6. Denied paths always win, whatever was learned.

_deny_path := _deny(concat("", ["path(s) denied for action '", input.action.action_id, "': ", concat(", ", input.target.denied_paths)])) if {
	count(input.target.denied_paths) > 0
}

# 7. The approval allowlist skips the hold for one (action, agent) pair.

_skip_hold := {"result": "allow", "sinks": sort(_allowed_sinks), "allowlisted": true} if {
	data.mandate.gate.allowlist[input.action.action_id][input.principal] == true
}

# 8-11. Holds: a person decides.

_hold := _held("risk_level_high") if {
	input.action.risk_level in {"high", "critical"}
} else := _held("sensitive_path") if {
	input.target.sensitive_path == true
} else := _held("unresolved_path") if {
	count(input.target.unresolved_paths) > 0
} else := _held("unresolved_domain") if {
	count(input.target.unresolved_domains) > 0
}

# 12.

_allow := {"result": "allow", "sinks": sort(_allowed_sinks)}

# --- helpers ---------------------------------------------------------------------------------

_deny(reason) := {"result": "deny", "deny_reason": reason, "sinks": []}

_held(why) := {"result": "hold", "hold_reason": why, "sinks": sort(_allowed_sinks)}

_acl := data.mandate.gate.acl

_own := _acl[input.principal]

_wildcard := object.get(_acl, "*", {"actions": [], "sinks": []})

_granted_actions contains action if {
	some action in _own.actions
}

_granted_actions contains action if {
	_own.inherits_wildcard == true
	some action in _wildcard.actions
}

_granted_actions contains action if {
	not _acl[input.principal]
	some action in _wildcard.actions
}

_allowed_sinks contains sink if {
	some sink in _own.sinks
}

_allowed_sinks contains sink if {
	_own.inherits_wildcard == true
	some sink in _wildcard.sinks
}

_allowed_sinks contains sink if {
	not _acl[input.principal]
	some sink in _wildcard.sinks
}
