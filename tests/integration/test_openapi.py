"""The OpenAPI document: it lists exactly the app's routes, and schemathesis finds no disagreement.

schemathesis generates requests for every operation from ``/openapi.json`` (valid and invalid
bodies, parameters, missing auth) and checks each answer against the document: no 5xx, documented
status codes, content types and response schemas, 4xx for data that violates the schema, 401
without the token, 405 for undocumented methods.

One check is left out: ``positive_data_acceptance`` (schema-valid data must be accepted). The server
validates more than a JSON schema can say (a real IANA zone, a dialable number, a whole number of
seconds or milli-credits, a window that opens at least once a year) and answers 422 naming the
field; the document says so, and the other checks still hold every answer to it.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance
from schemathesis.core.parameters import ParameterLocation

from tests.fixtures.web import ADMIN_TOKEN
from workers.web import app as web
from workers.web.openapi import document

#: Routes that are not part of the JSON API (the dashboard's pages and files).
NOT_DOCUMENTED = ("/", "/dashboard/batches", "/dashboard/batches/{batch_id}", "/campaigns/new", "/login", "/logout")


def test_the_document_lists_exactly_the_routes_of_the_app():
    routes = {(method.lower(), path) for method, path, _, _ in web.routes()
              if path not in NOT_DOCUMENTED and not path.startswith("/static/")}
    documented = {(method, path) for path, ops in document()["paths"].items() for method in ops}
    assert documented == routes


def test_every_operation_names_its_responses_and_security(api):
    served = api.get("/openapi.json", token=None).json()
    assert served == document()
    for path, ops in served["paths"].items():
        for method, op in ops.items():
            assert op["operationId"] and op["responses"], (method, path)
            public = path in ("/healthz", "/readyz", "/openapi.json", "/webhooks/retell")
            assert (op["security"] == []) == public, (method, path)
            if not public:
                assert "401" in op["responses"], (method, path)


@pytest.fixture
def fuzzed_server(web_factory, web_runtime):
    """A server with one account, one batch and one contact, so some generated ids meet real documents."""
    server = web_factory()
    client = server.client()
    client.put("/accounts/acme", {"plan": {"type": "minutes", "balance": 10}})
    batch = client.post("/batches", {"name": "fuzzed", "account_id": "acme"}).json()
    client.post(f"/batches/{batch['id']}/contacts", {"contacts": [{"phones": ["+56961234567"]}]})
    return server


schema = schemathesis.openapi.from_dict(document())


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_app_agrees_with_its_openapi_document(case, fuzzed_server):
    # The admin token goes with every request, except one whose headers were generated to break the document
    # (a missing Authorization among them): sending the token would make that request valid again.
    broken_headers = case.meta is not None and case.meta.is_negative_at(ParameterLocation.HEADER)
    headers = {} if broken_headers else {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    case.call_and_validate(base_url=fuzzed_server.url, headers=headers, excluded_checks=[positive_data_acceptance])
