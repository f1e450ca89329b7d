"""ASGI entry point.

uvicorn --app-dir example_apps/django_project example_site.asgi:application --no-proxy-headers
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_site.settings")
application = get_asgi_application()

from example_site import demo_data  # noqa: E402  (needs the apps loaded above)

demo_data.prepare()
