from governance.models.identity import Organization, Person, RoleAssignment, Team, TeamMembership
from governance.models.tokens import ApiToken

__all__ = ["ApiToken", "Organization", "Person", "RoleAssignment", "Team", "TeamMembership"]
