"""Property-based tests of the API against its own OpenAPI schema (schemathesis on the ASGI app).

Schemathesis generates requests from /openapi.json, valid ones and invalid ones, and checks
every response: no server error, a status code and a body that the schema documents. The
example count is bounded so that the whole file runs in seconds.
"""

import warnings

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance

from chainrule.web import create_app
from serve_helpers import (
    neighbour_set,
    one_blas_thread,  # noqa: F401 - an autouse fixture
    trained_run,
)

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    import starlette.testclient  # noqa: F401 - schemathesis's ASGI client imports it


@pytest.fixture(scope="module")
def app():
    # Schemathesis's ASGI client sends Host: testserver, a name the Host check refuses.
    return create_app(trained_run() / "model.npz", neighbours=neighbour_set(2000),
                      allowed_hosts=["testserver"])


@pytest.fixture(scope="module")
def api_schema(app):
    return schemathesis.openapi.from_asgi("/openapi.json", app)


# One hypothesis run per operation and mode inside an ordinary test (schemathesis's lazy
# pytest fixtures do not work with pytest 9).
@pytest.mark.parametrize("path, method, mode", [
    ("/api/predict", "POST", GenerationMode.POSITIVE),
    ("/api/predict", "POST", GenerationMode.NEGATIVE),
    ("/api/model", "GET", GenerationMode.POSITIVE),  # no parameters: no invalid requests
    ("/api/model/units", "GET", GenerationMode.POSITIVE),
    ("/healthz", "GET", GenerationMode.POSITIVE),
], ids=["predict-valid", "predict-invalid", "model", "units", "healthz"])
def test_api_conforms_to_its_schema(api_schema, path, method, mode):
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=25, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case):
        # A schema cannot say "the base64 of a picture": a valid-looking string that is not
        # an image is rightly refused (422), so only pixels must be accepted when valid.
        not_a_picture = isinstance(case.body, dict) and "image" in case.body
        case.call_and_validate(
            excluded_checks=[positive_data_acceptance] if not_a_picture else None)

    check()
