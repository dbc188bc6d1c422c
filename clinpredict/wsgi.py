import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clinpredict.settings.local")

application = get_wsgi_application()

# Production: every deployment check (shared cache, database role, ...) passes before this worker serves a request.
from apps.core.startup import enforce_deploy_checks  # noqa: E402

enforce_deploy_checks()
