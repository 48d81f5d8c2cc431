import sys

from django.http import JsonResponse
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET

from governance.api.errors import error_response
from governance.health import readiness


@require_GET
def healthz(request):
    return JsonResponse({"status": "ok", "service": "mandate"})


@require_GET
def readyz(request):
    http_status, body = readiness()
    return JsonResponse(body, status=http_status)


@csrf_exempt  # nothing to protect: every method gets the same JSON 404, not the CSRF page
def api_not_found(request, *args, **kwargs):
    return error_response(404, f"no route for {request.method} {request.path}")


def server_error(request):
    """``handler500``: on API routes the JSON answer (a 503 with Retry-After when the database
    is unreachable), also for errors raised in middleware before any view ran."""
    from governance.middleware import api_error_response

    response = api_error_response(request, sys.exc_info()[1])
    return response if response is not None else defaults.server_error(request)
