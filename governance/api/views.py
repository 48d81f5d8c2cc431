from django.http import JsonResponse
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
