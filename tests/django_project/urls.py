"""URL patterns of the test project."""

from __future__ import annotations

from django.urls import include, path, re_path

from . import views

api = [
    path("calls/", views.plain),
    path("items/<int:item_id>/", views.plain),
]

urlpatterns = [
    path("", views.plain),
    path("plain/", views.plain),
    path("async/", views.plain_async),
    path("users/<int:id>/", views.plain),
    path("async/users/<int:id>/", views.plain_async),
    path("chat/threads/<str:thread_id>/messages", views.plain),
    path("auth/login/", views.login),
    path("gated/login/", views.gated_login),
    path("gated/login-async/", views.gated_login_async),
    path("decorated/login/", views.decorated_login),
    path("decorated/login-async/", views.decorated_login_async),
    path("health/", views.health),
    path("api/", include(api)),
    re_path(r"^articles/(?P<year>[0-9]{4})/$", views.plain),
    path("limited/", views.limited),
    path("limited-async/", views.limited_async),
    path("annotated/", views.annotated),
    path("annotated-async/", views.annotated_async),
    path("post-only/", views.post_only),
    path("aliases/", views.aliases),
    path("shared/a/", views.shared_a),
    path("shared/b/", views.shared_b),
    path("tenant/", views.by_tenant),
    path("tenant-async/", views.by_tenant_async),
    path("weighted/", views.weighted),
    path("per-user/", views.per_user),
    path("stacked/", views.stacked),
    path("cbv/", views.LimitedView.as_view()),
    path("cbv-get/", views.GetLimitedView.as_view()),
    path("cbv-async/", views.limited_async_view),
]
