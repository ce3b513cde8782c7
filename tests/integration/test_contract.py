"""The OpenAPI document as a contract: every operation documents the problem responses its shape
implies, in application/problem+json, and /schema works without any other host."""

from __future__ import annotations

import re
from typing import Any

from litestar import Litestar, post
from litestar.openapi import OpenAPIConfig
from litestar.params import FromPath, JSONBody
from litestar.testing import AsyncTestClient
from msgspec import Struct

from suppress.api.auth import requires
from suppress.api.contract import document_problems
from suppress.api.schema_site import ASSETS
from tests.conftest import Tenant

Client = AsyncTestClient[Litestar]
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def _operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def _expected(method: str, operation: dict[str, Any], secured_by_default: bool) -> set[int]:
    """The statuses the operation's shape implies, restated from the documented rules."""
    parameters = operation.get("parameters", [])
    body = "requestBody" in operation
    security = operation.get("security")
    secured = secured_by_default if security is None else any(security)
    expected = {503}
    if parameters or body:
        expected |= {400, 422}
    if any(p["in"] == "path" for p in parameters):
        expected.add(404)
    if body:
        expected.add(413)
    if secured:
        expected |= {401, 403}
    if method in ("post", "put", "patch", "delete"):
        expected.add(409)
    return expected


async def test_every_operation_documents_its_problem_responses(client: Client) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    problem = schema["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"type", "title", "status", "code", "detail", "instance"}
    secured_by_default = any(schema["security"])
    missing = []
    for method, path, operation in _operations(schema):
        responses = operation["responses"]
        for status in sorted(_expected(method, operation, secured_by_default)):
            content = responses.get(str(status), {}).get("content", {})
            if content.get("application/problem+json", {}).get("schema") != PROBLEM_REF:
                missing.append(f"{method.upper()} {path}: {status}")
        for status, response in responses.items():
            # Litestar's own error shape ({status_code, detail, extra}) is never what this service sends.
            if int(status) >= 400 and "application/json" in response.get("content", {}):
                assert "status_code" not in str(response["content"]["application/json"]), (path, status)
    assert not missing, "operations without their problem responses:\n" + "\n".join(missing)
    assert len(_operations(schema)) >= 40


async def test_routes_without_a_key_say_so_and_the_pages_are_html(client: Client) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    paths = schema["paths"]
    for path in ("/healthz", "/readyz", "/metrics"):
        assert paths[path]["get"]["security"] == [{}]
        assert "401" not in paths[path]["get"]["responses"]
    page = paths["/u/{token}"]
    assert set(page["get"]["responses"]["200"]["content"]) == {"text/html"}
    assert "text/html" in page["post"]["responses"]["400"]["content"]
    export = paths["/v1/suppressions/export"]["get"]["responses"]["200"]["content"]
    assert set(export) == {"text/csv", "application/x-ndjson"}
    topic = paths["/v1/topics"]["post"]["responses"]
    assert {"200", "201"} <= set(topic)


class Thing(Struct):
    name: str


@post("/v1/things/{thing_id:int}", guards=[requires("write")], sync_to_thread=False)
def make_thing(thing_id: FromPath[int], data: JSONBody[Thing]) -> Thing:
    return data


async def test_a_new_endpoint_is_documented_by_the_rules_alone() -> None:
    """An endpoint added anywhere gets its problem responses without listing any."""
    app = Litestar(
        [make_thing],
        openapi_config=OpenAPIConfig(title="t", version="1", security=[{"BearerAuth": []}]),
        on_startup=[document_problems],
    )
    async with AsyncTestClient(app) as test_client:
        schema = (await test_client.get("/schema/openapi.json")).json()
    responses = schema["paths"]["/v1/things/{thing_id}"]["post"]["responses"]
    assert set(responses) == {"201", "400", "401", "403", "404", "409", "413", "422", "503"}
    assert responses["400"]["content"] == {"application/problem+json": {"schema": PROBLEM_REF}}


async def test_error_answers_are_problem_json(client: Client, tenant: Tenant) -> None:
    answers = [
        await client.get("/v1/topics"),
        await client.get("/v1/topics", headers=tenant.auth("check")),
        await client.get("/v1/imports/999999", headers=tenant.auth("read")),
        await client.post("/v1/topics", content=b"{", headers=tenant.auth("write")),
        await client.post("/v1/topics", json={"name": 5}, headers=tenant.auth("write")),
        await client.get("/v1/suppressions?limit=0", headers=tenant.auth("read")),
    ]
    assert [a.status_code for a in answers] == [401, 403, 404, 400, 422, 400]
    for answer in answers:
        assert answer.headers["content-type"] == "application/problem+json", answer.text
        body = answer.json()
        assert {"type", "title", "status", "code", "detail", "instance"} <= set(body)


async def test_exports_say_their_charset_once(client: Client, tenant: Tenant) -> None:
    answer = await client.get("/v1/suppressions/export?format=csv", headers=tenant.auth("read"))
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/csv; charset=utf-8"


async def test_the_schema_page_loads_nothing_from_another_host(client: Client) -> None:
    for path in ("/schema", "/schema/swagger"):
        page = await client.get(path)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        head = page.text.split("<body", 1)[0]
        urls = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", head)
        assert urls, head
        for url in urls:
            assert url.startswith("/schema/assets/"), url
        assert "//" not in "".join(urls)
    for name, media_type in ASSETS.items():
        asset = await client.get(f"/schema/assets/{name}")
        assert asset.status_code == 200, name
        assert asset.headers["content-type"].split(";")[0] == media_type
        assert len(asset.content) > 500
    assert (await client.get("/schema/assets/index.html")).status_code == 404
    assert (await client.get("/schema/assets/..%2Fswagger-ui.css")).status_code == 404


async def test_an_import_id_past_bigint_is_not_found(client: Client, tenant: Tenant) -> None:
    """Found by Schemathesis: the id overflowed in the query (500); webhooks and providers already
    answered 404 for ids no one handed out."""
    huge = "1671337428353025396643452497690624"
    for path in (f"/v1/imports/{huge}", f"/v1/imports/{huge}/errors", "/v1/imports/0"):
        answer = await client.get(path, headers=tenant.auth("read"))
        assert answer.status_code == 404, (path, answer.text)
        assert answer.json()["code"] == "not_found"
    answer = await client.get(
        "/v1/providers/1/events?before=99999999999999999999999", headers=tenant.auth("read")
    )
    assert answer.status_code == 400
    assert answer.json()["errors"][0] == {
        "field": "before",
        "source": "query",
        "message": "must be at most 4611686018427387904",
    }


async def test_bodies_read_by_the_handler_are_documented(client: Client) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    upload = schema["paths"]["/v1/imports"]["post"]
    assert {"text/csv", "application/x-ndjson", "multipart/form-data"} <= set(
        upload["requestBody"]["content"]
    )
    assert {"400", "413", "422"} <= set(upload["responses"])
    one_click = schema["paths"]["/u/{token}"]["post"]["requestBody"]["content"]
    form = one_click["application/x-www-form-urlencoded"]["schema"]
    assert form["properties"]["List-Unsubscribe"]["enum"] == ["One-Click"]


async def test_created_things_link_to_what_can_be_done_with_them(client: Client) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    paths = schema["paths"]
    for path, status, targets in (
        ("/v1/webhooks", "201", {"/v1/webhooks/{webhook_id}": "delete"}),
        ("/v1/providers", "201", {"/v1/providers/{provider_id}": "delete"}),
        ("/v1/imports", "202", {"/v1/imports/{import_id}": "get"}),
    ):
        links = paths[path]["post"]["responses"][status]["links"].values()
        for target, method in targets.items():
            ref = "#/paths/" + target.replace("/", "~1") + "/" + method
            [link] = [link for link in links if link["operationRef"] == ref]
            [(parameter, expression)] = link["parameters"].items()
            assert parameter in target and expression == "$response.body#/id"
            assert method in paths[target]
