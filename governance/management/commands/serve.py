"""Run the whole service in the foreground: the ASGI server, a Celery worker and beat.

Ctrl-C (SIGINT) or SIGTERM stops all three; if any one dies, the others are stopped too.
"""

import os
import signal
import subprocess
import sys
import time

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Serve the API, the admin and background workers (uvicorn + Celery worker + beat)."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8080)
        parser.add_argument("--web-workers", type=int, default=1)
        parser.add_argument("--concurrency", type=int, default=2, help="Celery worker processes")
        parser.add_argument("--no-worker", action="store_true", help="serve HTTP only")

    def handle(self, *args, host, port, web_workers, concurrency, no_worker, **options):
        python = sys.executable
        commands = {
            "web": [
                python,
                "-m",
                "uvicorn",
                "governance.asgi:application",
                "--host",
                host,
                "--port",
                str(port),
                "--workers",
                str(web_workers),
                "--no-access-log",
                "--lifespan",
                "off",
            ],
        }
        if not no_worker:
            commands["worker"] = [
                python,
                "-m",
                "celery",
                "-A",
                "governance",
                "worker",
                "--loglevel",
                "INFO",
                "--concurrency",
                str(concurrency),
                "--without-gossip",
                "--without-mingle",
            ]
            commands["beat"] = [python, "-m", "celery", "-A", "governance", "beat", "--loglevel", "INFO"]

        processes = {}
        stopping = False

        def stop(signum=None, frame=None):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        for name, command in commands.items():
            # Each child gets its own process group so a terminal Ctrl-C reaches us once, and
            # we stop them in order.
            processes[name] = subprocess.Popen(command, env=os.environ.copy(), start_new_session=True)
        self.stdout.write(f"Mandate is serving on http://{host}:{port} (Ctrl-C stops everything)")

        try:
            while not stopping:
                for name, process in processes.items():
                    if process.poll() is not None:
                        self.stderr.write(f"{name} exited with {process.returncode}; stopping the others")
                        stopping = True
                time.sleep(0.5)
        finally:
            for process in processes.values():
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 15
            for process in processes.values():
                try:
                    process.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    process.kill()
            self.stdout.write("stopped")
