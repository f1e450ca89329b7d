#!/usr/bin/env python
"""Django's command-line utility for the example project."""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_site.settings")
    from django.core.management import execute_from_command_line

    if sys.argv[1:2] == ["runserver"]:
        # The admin site needs its tables and the demo users: made here, so no migrate step comes first.
        import django

        django.setup()
        from example_site import demo_data

        demo_data.prepare()
    execute_from_command_line(sys.argv)
