from django.conf import settings
from django.core.management.commands import migrate


class Command(migrate.Command):
    """Django's migrate, connected as the schema's owner by default: the ``migrate`` alias
    (``DATABASE_MIGRATE_URL``) when configured, while the app runs as a role that may only
    append evidence (docs/deployment.md)."""

    help = migrate.Command.help

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.set_defaults(database=settings.MANDATE_OWNER_DATABASE)
