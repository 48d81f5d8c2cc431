from django.core.management.base import BaseCommand

from evidence.choices import KeyAlgorithm
from evidence.services.keys import rotate_key


class Command(BaseCommand):
    help = "Retire the active signing key of an algorithm (it stays in the JWKS) and create a new one."

    def add_arguments(self, parser):
        parser.add_argument("--algorithm", choices=KeyAlgorithm.values, required=True)

    def handle(self, *args, algorithm, **options):
        key = rotate_key(algorithm)
        self.stdout.write(f"new active {algorithm} key: {key.kid}")
