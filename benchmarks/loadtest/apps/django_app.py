"""The load test's Django project as WSGI (``application``) and ASGI (``asgi_application``).

From ``benchmarks/loadtest/apps``::

    LOADTEST_LIB=ours gunicorn -k gthread --threads 8 django_app:application
    LOADTEST_LIB=ours gunicorn -k uvicorn.workers.UvicornWorker django_app:asgi_application
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_settings")

from django.core.asgi import get_asgi_application
from django.core.wsgi import get_wsgi_application

application = get_wsgi_application()
asgi_application = get_asgi_application()
