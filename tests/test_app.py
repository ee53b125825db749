"""The app factory's promises about the app it builds."""

import inspect
from itertools import chain

from segsvc import SyncFlask


def test_no_view_hook_or_handler_is_async_so_flask_need_not_check(app):
    """SyncFlask skips Flask's per-request `iscoroutinefunction` checks: an async function
    registered here would be called without being awaited."""
    assert isinstance(app, SyncFlask)
    registered = chain(
        app.view_functions.values(),
        *app.before_request_funcs.values(),
        *app.after_request_funcs.values(),
        *app.teardown_request_funcs.values(),
        app.teardown_appcontext_funcs,
        (
            handler
            for by_code in app.error_handler_spec.values()
            for by_class in by_code.values()
            for handler in by_class.values()
        ),
    )
    functions = list(registered)
    assert len(functions) > 20
    assert not [f for f in functions if inspect.iscoroutinefunction(inspect.unwrap(f))]


def test_a_doubled_slash_is_a_404_problem_not_a_redirect(client):
    response = client.get("/api/v1//segments")
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["code"] == "not_found"
