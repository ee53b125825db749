"""/openapi.json describes the service as it answers, and /docs shows it without the internet."""

import re
from html.parser import HTMLParser
from typing import Any

from openapi_schema_validator import OAS30Validator, oas30_format_checker
from openapi_spec_validator import validate
from support import create_segment

from segsvc.openapi import undocumented_routes
from segsvc.schemas import MAX_USER_ID

PROBLEM_MIMETYPE = "application/problem+json"
MEBIBYTE = 1024 * 1024
BODY_ERRORS = {"400", "413", "415", "422"}
REPORT = "/api/v1/reports/history.csv"
_SCHEMA_REF = re.compile(r"^#/components/schemas/(?P<name>.+)$")


def served_spec(client: Any) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    return response.get_json()


def spec_path(rule: str) -> str:
    """`/users/<user_id>` as OpenAPI writes it: `/users/{user_id}`."""
    return re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule)


def documented_rules(app: Any) -> list[Any]:
    """The rules whose view declares an operation (not `@hidden`)."""
    return [
        rule
        for rule in app.url_map.iter_rules()
        if getattr(app.view_functions[rule.endpoint], "openapi_operation", None) is not None
    ]


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
    ]


def references(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in references(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in references(value)]
    return []


def resolved(node: Any, spec: dict[str, Any]) -> Any:
    """`node` with every schema reference replaced by the schema (the spec has no cycles)."""
    if isinstance(node, dict):
        if "$ref" in node:
            name = _SCHEMA_REF.match(node["$ref"])["name"]
            return resolved(spec["components"]["schemas"][name], spec)
        return {key: resolved(value, spec) for key, value in node.items()}
    if isinstance(node, list):
        return [resolved(value, spec) for value in node]
    return node


def assert_documented(spec: dict[str, Any], method: str, path: str, response: Any) -> None:
    """The status is one the operation lists, and the body matches the schema given for it."""
    operation = spec["paths"][path][method.lower()]
    status = str(response.status_code)
    assert status in operation["responses"], (
        f"{method} {path} answered {status}, documented: {sorted(operation['responses'])}",
        response.get_data(as_text=True)[:300],
    )
    content = operation["responses"][status].get("content")
    if content is None:
        return
    assert response.mimetype in content, (method, path, status, response.mimetype)
    schema = resolved(content[response.mimetype]["schema"], spec)
    OAS30Validator(schema, format_checker=oas30_format_checker).validate(
        response.get_json(force=True)
    )


# The description itself


def test_openapi_json_is_a_valid_openapi_3_document(client):
    spec = served_spec(client)
    assert spec["openapi"].startswith("3.")
    validate(spec)


def test_every_route_declares_an_operation_or_that_it_is_hidden(app):
    assert undocumented_routes(app) == []


def test_every_documented_route_is_described_with_each_of_its_methods(app, client):
    spec = served_spec(client)
    rules = documented_rules(app)
    assert rules
    for rule in rules:
        path = spec_path(rule.rule)
        assert path in spec["paths"], path
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert method.lower() in spec["paths"][path], (method, path)


def test_every_described_operation_is_a_route_of_the_app(app, client):
    served = {
        (spec_path(rule.rule), method.lower())
        for rule in documented_rules(app)
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    described = {(path, method) for path, method, _ in operations(served_spec(client))}
    assert described == served


def test_every_path_parameter_is_described_as_required(client):
    for path, method, operation in operations(served_spec(client)):
        described = {
            parameter["name"]
            for parameter in operation.get("parameters", [])
            if parameter["in"] == "path" and parameter["required"]
        }
        assert described == set(re.findall(r"{([a-z_]+)}", path)), (method, path)


def test_every_referenced_schema_exists(client):
    spec = served_spec(client)
    refs = references(spec)
    assert refs
    for ref in refs:
        match = _SCHEMA_REF.match(ref)
        assert match, ref
        assert match["name"] in spec["components"]["schemas"], ref


def test_every_schema_in_components_is_referenced(client):
    spec = served_spec(client)
    used = {_SCHEMA_REF.match(ref)["name"] for ref in references(spec)}
    assert set(spec["components"]["schemas"]) == used


def test_every_error_response_is_described_as_problem_json(client):
    spec = served_spec(client)
    for path, method, operation in operations(spec):
        for status, response in operation["responses"].items():
            if int(status) >= 400:
                assert response["content"] == {
                    PROBLEM_MIMETYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}
                }, (method, path, status)


def test_operations_that_take_a_body_describe_its_errors(client):
    for path, method, operation in operations(served_spec(client)):
        if "requestBody" in operation:
            missing = BODY_ERRORS - operation["responses"].keys()
            assert not missing, (method, path, sorted(missing))


def test_operations_that_take_parameters_describe_422(client):
    for path, method, operation in operations(served_spec(client)):
        if operation.get("parameters"):
            assert "422" in operation["responses"], (method, path)


def untyped_properties(schema: dict[str, Any], where: str) -> list[str]:
    """Properties (at any depth) that state no type, so a client may send anything there."""
    found = []
    for name, value in schema.get("properties", {}).items():
        if not value.keys() & {"type", "$ref", "oneOf", "anyOf", "allOf"}:
            found.append(f"{where}.{name}")
        found += untyped_properties(value, f"{where}.{name}")
        found += untyped_properties(value.get("items", {}), f"{where}.{name}[]")
    return found


def test_every_parameter_and_property_states_its_type(client):
    spec = served_spec(client)
    untyped = [
        name
        for name, schema in spec["components"]["schemas"].items()
        for name in untyped_properties(schema, name)
    ]
    untyped += [
        f"{method} {path} {parameter['name']}"
        for path, method, operation in operations(spec)
        for parameter in operation.get("parameters", [])
        if "type" not in parameter["schema"]
    ]
    assert untyped == []


def test_every_integer_parameter_states_the_bounds_the_service_checks(client):
    for path, method, operation in operations(served_spec(client)):
        for parameter in operation.get("parameters", []):
            if parameter["schema"]["type"] == "integer":
                bounds = parameter["schema"].keys() & {"minimum", "maximum"}
                assert bounds == {"minimum", "maximum"}, (method, path, parameter["name"])


def test_user_ids_in_queries_are_bounded_like_user_ids_in_paths(client, subtests):
    for url in (
        f"/api/v1/segments/A/members?after={MAX_USER_ID + 1}",
        f"/api/v1/reports/history.csv?from=2023-08&user_id={MAX_USER_ID + 1}",
    ):
        with subtests.test(url=url):
            assert client.get(url).status_code == 422
    spec = served_spec(client)
    for path, name in (("/api/v1/segments/{slug}/members", "after"), (REPORT, "user_id")):
        with subtests.test(path=path, name=name):
            (parameter,) = [
                p for p in spec["paths"][path]["get"]["parameters"] if p["name"] == name
            ]
            assert parameter["schema"]["maximum"] == MAX_USER_ID


def test_bodies_refused_for_their_shape_are_invalid_by_the_description(client, subtests):
    """Rules over several fields are in the description too, where JSON Schema can state them."""
    spec = served_spec(client)
    create_segment(client, "A")
    later = {"slug": "A", "expires_at": "2999-01-01T00:00:00Z", "ttl_seconds": 60}
    requests = [
        ("PATCH", "/api/v1/segments/{slug}", "/api/v1/segments/A", {}),
        ("PATCH", "/api/v1/users/{user_id}/segments", "/api/v1/users/1/segments", {}),
        (
            "PATCH",
            "/api/v1/users/{user_id}/segments",
            "/api/v1/users/1/segments",
            {"add": [], "remove": []},
        ),
        ("PATCH", "/api/v1/users/{user_id}/segments", "/api/v1/users/1/segments", {"add": [later]}),
        (
            "PATCH",
            "/api/v1/users/{user_id}/segments",
            "/api/v1/users/1/segments",
            {"remove": ["A", "A"]},
        ),
        (
            "PATCH",
            "/api/v1/users/{user_id}/segments",
            "/api/v1/users/1/segments",
            {"remove": [f"S{number}" for number in range(1001)]},
        ),
        ("POST", "/api/v1/users", "/api/v1/users", {"user_ids": list(range(1, 10_002))}),
        ("POST", "/api/v1/reports", "/api/v1/reports", {"from": "2023-08", "to": 202308}),
    ]
    for method, path, url, body in requests:
        with subtests.test(method=method, url=url, body=body):
            assert client.open(url, method=method, json=body).status_code == 422
            content = spec["paths"][path][method.lower()]["requestBody"]["content"]
            schema = resolved(content["application/json"]["schema"], spec)
            assert not OAS30Validator(schema, format_checker=oas30_format_checker).is_valid(body)


# The description matches what the service answers


def test_successful_responses_match_the_description(client, subtests):
    spec = served_spec(client)
    change = {"add": ["A", {"slug": "B", "ttl_seconds": 3600}], "remove": ["C"]}
    requests = [
        ("POST", "/api/v1/segments", "/api/v1/segments", {"json": {"slug": "A"}}),
        (
            "POST",
            "/api/v1/segments",
            "/api/v1/segments",
            {"json": {"slug": "B", "description": "b"}},
        ),
        ("POST", "/api/v1/segments", "/api/v1/segments", {"json": {"slug": "C"}}),
        ("POST", "/api/v1/users", "/api/v1/users", {"json": {"user_ids": [1, 2]}}),
        ("PATCH", "/api/v1/users/{user_id}/segments", "/api/v1/users/1/segments", {"json": change}),
        ("GET", "/api/v1/users/{user_id}/segments", "/api/v1/users/1/segments", {}),
        ("GET", "/api/v1/users/{user_id}", "/api/v1/users/1", {}),
        ("GET", "/api/v1/segments/{slug}", "/api/v1/segments/A", {}),
        ("DELETE", "/api/v1/segments/{slug}", "/api/v1/segments/C", {}),
        ("GET", "/api/v1/segments", "/api/v1/segments?include_deleted=true", {}),
        ("DELETE", "/api/v1/users/{user_id}", "/api/v1/users/2", {}),
        ("GET", "/healthz", "/healthz", {}),
        ("GET", "/readyz", "/readyz", {}),
        ("GET", "/openapi.json", "/openapi.json", {}),
        ("GET", "/docs", "/docs", {}),
    ]
    for method, path, url, arguments in requests:
        with subtests.test(method=method, url=url):
            response = client.open(url, method=method, **arguments)
            assert response.status_code < 300, response.get_data(as_text=True)
            assert_documented(spec, method, path, response)


def test_error_responses_match_the_description(client, subtests):
    spec = served_spec(client)
    create_segment(client, "A")
    assert client.post("/api/v1/users", json={"user_ids": [1]}).status_code == 200
    broken = {"data": b"{", "content_type": "application/json"}
    text = {"data": b"{}", "content_type": "text/plain"}
    huge = {"data": b" " * (MEBIBYTE + 1), "content_type": "application/json"}
    segments, users = "/api/v1/segments", "/api/v1/users"
    change, change_url = "/api/v1/users/{user_id}/segments", "/api/v1/users/1/segments"
    requests = [
        ("POST", segments, segments, broken),
        ("POST", segments, segments, {"json": {"slug": "A"}}),
        ("POST", segments, segments, huge),
        ("POST", segments, segments, text),
        ("POST", segments, segments, {"json": {"slug": "-A"}}),
        ("GET", segments, f"{segments}?include_deleted=maybe", {}),
        ("GET", "/api/v1/segments/{slug}", f"{segments}/NOPE", {}),
        ("GET", "/api/v1/segments/{slug}", f"{segments}/-A", {}),
        ("DELETE", "/api/v1/segments/{slug}", f"{segments}/NOPE", {}),
        ("DELETE", "/api/v1/segments/{slug}", f"{segments}/-A", {}),
        ("POST", users, users, broken),
        ("POST", users, users, huge),
        ("POST", users, users, text),
        ("POST", users, users, {"json": {"user_ids": [0]}}),
        ("GET", "/api/v1/users/{user_id}", f"{users}/2", {}),
        ("GET", "/api/v1/users/{user_id}", f"{users}/0", {}),
        ("DELETE", "/api/v1/users/{user_id}", f"{users}/2", {}),
        ("DELETE", "/api/v1/users/{user_id}", f"{users}/abc", {}),
        ("GET", change, f"{users}/abc/segments", {}),
        ("PATCH", change, change_url, broken),
        ("PATCH", change, change_url, {"json": {"add": ["NOPE"]}}),
        ("PATCH", change, change_url, huge),
        ("PATCH", change, change_url, text),
        ("PATCH", change, change_url, {"json": {"add": ["A"], "remove": ["A"]}}),
        ("PATCH", change, change_url, {"json": {"remove": [f"S{n}" for n in range(101)]}}),
        ("PATCH", change, change_url, {"json": {"remove": ["-"] * 1001}}),
        ("POST", users, users, {"json": {"user_ids": [0] * 101}}),
    ]
    for method, path, url, arguments in requests:
        with subtests.test(method=method, url=url[:60], body=str(arguments)[:40]):
            response = client.open(url, method=method, **arguments)
            assert response.status_code >= 400
            assert_documented(spec, method, path, response)


def test_problems_outside_any_operation_match_the_problem_schema(client, subtests):
    problem = resolved({"$ref": "#/components/schemas/Problem"}, served_spec(client))
    for method, url in (("GET", "/no/such/route"), ("PUT", "/api/v1/segments")):
        with subtests.test(method=method, url=url):
            response = client.open(url, method=method)
            assert response.mimetype == PROBLEM_MIMETYPE
            OAS30Validator(problem).validate(response.get_json())


# Swagger UI


class _AssetReferences(HTMLParser):
    """Every `src` and `href` of the page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in {"src", "href"} and value]


def docs_asset_urls(page: str) -> list[str]:
    parser = _AssetReferences()
    parser.feed(page)
    return parser.urls


def test_docs_page_refers_to_nothing_outside_the_service(client):
    response = client.get("/docs")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert "http://" not in page
    assert "https://" not in page
    urls = docs_asset_urls(page)
    assert {url.rsplit("/", 1)[-1] for url in urls} >= {"swagger-ui-bundle.js", "swagger-ui.css"}
    for url in urls:
        assert url.startswith("/"), url
        assert not url.startswith("//"), url
    assert 'url: "/openapi.json"' in page


def test_docs_assets_are_served(client, subtests):
    expected_types = {".js": {"text/javascript", "application/javascript"}, ".css": {"text/css"}}
    for url in docs_asset_urls(client.get("/docs").get_data(as_text=True)):
        with subtests.test(url=url):
            response = client.get(url)
            try:
                assert response.status_code == 200
                assert response.mimetype in expected_types[url[url.rindex(".") :]]
                assert len(response.get_data()) > 10_000
            finally:
                response.close()


def test_files_outside_the_docs_bundle_are_not_served(client, subtests):
    for url in (
        "/docs/assets/../../../../etc/passwd",
        "/docs/assets/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/docs/assets//etc/passwd",
        "/docs/assets/no-such-asset.js",
    ):
        with subtests.test(url=url):
            response = client.get(url)
            assert response.status_code in (308, 404), url
            if response.status_code == 404:
                assert response.mimetype == PROBLEM_MIMETYPE
            assert "root:" not in response.get_data(as_text=True)
