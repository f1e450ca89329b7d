"""A small Django project limited by the shared ``example_apps/ratelimits.toml``."""
