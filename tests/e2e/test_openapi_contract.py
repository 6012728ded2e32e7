"""/openapi.json matches what the server does: schemathesis generates requests from the document
(valid and invalid) and checks every response against it, through Envoy on the real mesh."""

from __future__ import annotations

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from clawdbot.gateway.openapi import openapi_document
from clawdbot.gateway.up import Mesh

from .conftest import API_KEY

EXAMPLES = 10  # per operation: enough to cover each schema branch on a 2-core box
# A schema-valid body can still be refused for what a schema cannot say (max_tokens beyond the
# prompt's room, a tool message without content, an unknown model): like OpenAI's, these are
# 400/404 by design. Every other check (status codes, content types, response schemas, invalid
# data rejected, no server errors) runs.
EXCLUDED = [positive_data_acceptance]


def test_api_conforms_to_openapi(mesh: Mesh) -> None:
    served = httpx.get(mesh.http_url + "/openapi.json", timeout=10).json()
    assert served == openapi_document()  # the served document is the generated one
    schema = schemathesis.openapi.from_dict(served)
    schema.config.update(base_url=mesh.http_url)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/chat/completions", "/v1/completions", "/v1/models"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def conforms(case: schemathesis.Case) -> None:
            case.call_and_validate(
                headers={"Authorization": f"Bearer {API_KEY}"}, excluded_checks=EXCLUDED, timeout=60
            )

        conforms()
