"""A Django project for the integration tests: settings, URLs and views."""
