"""The one base-URL normalisation and API-key lookup (serve.client.endpoint). The cases marked "was"
are where the bench's and the smoke suite's copies used to disagree; the sidecar's probe only
stripped slashes."""

from __future__ import annotations

import httpx
import pytest

from serve.client.endpoint import Endpoint, api_key_from, auth_headers, normalize_base_url
from serve.errors import KitError


@pytest.mark.parametrize(
    ("url", "root"),
    [
        ("http://h:1", "http://h:1"),
        ("http://h:1/", "http://h:1"),
        ("http://h:1/v1", "http://h:1"),
        ("http://h:1/v1/", "http://h:1"),
        ("https://h/api", "https://h/api"),  # a proxy prefix is kept
        ("https://h/api/v1", "https://h/api"),
        # was: the bench kept the spaces (and then failed to connect); smoke stripped them
        ("  http://h:1/v1  ", "http://h:1"),
        ("http://h:1/v1//", "http://h:1"),
    ],
)
def test_forms_of_one_server(url: str, root: str) -> None:
    assert normalize_base_url(url) == root


@pytest.mark.parametrize(
    ("url", "says"),
    [
        # was: the bench accepted these and failed later in httpx (UnsupportedProtocol); smoke refused
        ("h:8000", "expected http://HOST:PORT"),
        ("127.0.0.1:8000/v1", "expected http://HOST:PORT"),
        ("ftp://h:1", "expected http://HOST:PORT"),
        # refused by neither before
        ("http://", "no host"),
        ("http://h:notaport", "port is not a number"),
        ("http://h:1/v1?x=1", "query or fragment"),
    ],
)
def test_what_is_not_a_base_url_names_the_option(url: str, says: str) -> None:
    with pytest.raises(KitError, match=says) as err:
        normalize_base_url(url, where="--base-url-a")
    assert str(err.value).startswith(f"--base-url-a {url!r}:")


def test_api_key_flag_then_vllm_then_openai_env() -> None:
    both = {"VLLM_API_KEY": "v", "OPENAI_API_KEY": "o"}
    assert api_key_from("flag", both) == "flag"
    assert api_key_from(None, both) == "v"
    assert api_key_from(None, {"VLLM_API_KEY": "", "OPENAI_API_KEY": "o"}) == "o"
    assert api_key_from(None, {}) is None
    assert api_key_from("", {}) is None


def test_the_key_goes_on_every_request_and_none_without_one() -> None:
    assert auth_headers(None) == {} and auth_headers("") == {}
    ep = Endpoint("http://h:1", "m", "sk-1")
    assert ep.headers == {"Authorization": "Bearer sk-1"}
    assert ep.url("/metrics") == "http://h:1/metrics"
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, text="")

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        client.get(ep.url("/v1/models"), headers=ep.headers)
        client.get(Endpoint("http://h:1", "m").url("/v1/models"))
    assert seen[0].headers["authorization"] == "Bearer sk-1"
    assert "authorization" not in seen[1].headers
