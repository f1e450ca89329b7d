"""WSGI entry point: ``gunicorn example_site.wsgi`` (from ``example_apps/django_project``)."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_site.settings")
application = get_wsgi_application()

from example_site import demo_data  # noqa: E402  (needs the apps loaded above)

demo_data.prepare()
