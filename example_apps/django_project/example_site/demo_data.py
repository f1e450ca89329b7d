"""The example's database, made ready at start-up: its tables, and the demo users when missing.

So that the README's one command runs the admin site on a fresh checkout, with
no ``manage.py migrate`` step first.
"""

from __future__ import annotations

from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from django.db import transaction

from example_site.auth import DEMO_USERS

PANEL_APP = "bisman_ratelimit_admin"
"""The admin panel's permissions (one per page) belong to this app label."""


def prepare() -> None:
    """Migrates, then creates each demo user that is missing; the staff user gets the panel's pages."""
    call_command("migrate", verbosity=0, interactive=False)
    with transaction.atomic():
        for name, account in DEMO_USERS.items():
            if User.objects.filter(username=name).exists():
                continue  # never overwrite what someone changed in the admin site
            user = User(username=name, is_staff=bool(account["staff"]))
            user.set_password(str(account["password"]))
            user.save()
            if user.is_staff:
                user.user_permissions.set(Permission.objects.filter(content_type__app_label=PANEL_APP))
