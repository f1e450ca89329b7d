"""The admin panel in the Django admin site: flags, rate limits, sessions, namespaces, health.

Add ``"bisman_ratelimit_django.admin_panel"`` to ``INSTALLED_APPS`` (with
``django.contrib.admin``) and, before the admin site's own URLs::

    path("admin/ratelimit/", include("bisman_ratelimit_django.admin_panel.urls")),

Staff users see the pages their permissions allow (one per page, on the
unmanaged model :class:`~.models.Panel`).
"""

from __future__ import annotations

__all__: list[str] = []
