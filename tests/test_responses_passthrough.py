"""`/v1/responses` to `openai`: a passthrough to the upstream's own Responses API. The
request body reaches the upstream as sent (only `model` renamed when the client named
`openai/<model>`), the events come back byte for byte, errors as OpenAI sent them, and
`GET`/`DELETE`/`cancel` of the upstream's own ids reach it. Driven by the official SDK
against a loopback upstream sending OpenAI's Responses bytes (`wire_openai_responses`,
whose scripts the SDK's own types accept)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import openai
import pytest
import support

pytest.importorskip("streamgate.providers.openai_responses")  # the passthrough (providers/openai_responses.py)
wire = pytest.importorskip("wire_openai_responses")


@pytest.fixture(scope="module")
def gateway() -> Iterator[tuple[str, wire.ResponsesUpstream]]:
    upstream = wire.ResponsesUpstream()
    with upstream.loopback.running():
        with support.gateway(
            openai_api_key="sk-upstream", openai_base_url=upstream.loopback.url, upstream_max_retries=0
        ) as url:
            yield url, upstream


def script() -> bytes:
    return wire.ResponseScript().reasoning([["Thinking ", "hard."]]).message(["Hel", "lo ", "wörld"]).body()


def test_stream_passes_through_byte_for_byte(gateway: tuple[str, wire.ResponsesUpstream]) -> None:
    url, upstream = gateway
    body = script()
    upstream.replies.clear()
    upstream.loopback.requests.clear()
    upstream.stream(body)
    request = (
        b'{"model":"gpt-5.5","input":"Hi","stream":true,"store":false,"prompt_cache_key":"k",'
        b'"include":["reasoning.encrypted_content"],"reasoning":{"effort":"low","summary":"auto"},'
        b'"tools":[{"type":"web_search"}],"tool_choice":{"type":"web_search"},"some_future_field":{"x":[1,2]}}'
    )
    headers = {"content-type": "application/json", "session-id": "s-1", "authorization": "Bearer c"}
    response = httpx.post(url + "/v1/responses", content=request, timeout=20, headers=headers)
    assert response.status_code == 200
    assert response.content == body
    [received] = upstream.received
    assert received.body == request and received.path == "/v1/responses"
    assert received.headers["authorization"] == "Bearer sk-upstream" and received.headers["session-id"] == "s-1"


def test_sdk_stream_and_a_renamed_model(gateway: tuple[str, wire.ResponsesUpstream]) -> None:
    url, upstream = gateway
    upstream.replies.clear()
    upstream.loopback.requests.clear()
    upstream.stream(script())
    client = openai.OpenAI(base_url=url + "/v1", api_key="sk-client", max_retries=0)
    with client.responses.stream(model="openai/gpt-5.5", input="Hi", reasoning={"summary": "auto"}) as stream:
        final = stream.get_final_response()
    assert final.output_text == "Hello wörld" and final.id == wire.RESPONSE_ID
    sent = upstream.received[0].json
    assert sent["model"] == "gpt-5.5" and sent["reasoning"] == {"summary": "auto"}


def test_not_streamed_get_and_delete_pass_through(gateway: tuple[str, wire.ResponsesUpstream]) -> None:
    url, upstream = gateway
    answer = json.dumps(wire.response_object([wire.message_item("Hi there")], usage_=wire.usage())).encode()
    upstream.replies.clear()
    upstream.loopback.requests.clear()
    deleted_body = b'{"id":"%s","object":"response","deleted":true}' % wire.RESPONSE_ID.encode()
    upstream.json(answer).json(answer).json(deleted_body)
    client = openai.OpenAI(base_url=url + "/v1", api_key="sk-client", max_retries=0)
    created = client.responses.with_raw_response.create(model="gpt-5.5", input="Hi")
    assert created.http_response.content == answer and created.parse().output_text == "Hi there"
    assert client.responses.retrieve(wire.RESPONSE_ID).output_text == "Hi there"
    deleted = httpx.delete(f"{url}/v1/responses/{wire.RESPONSE_ID}", timeout=10)
    assert deleted.json()["deleted"] is True
    assert [(r.method, r.path) for r in upstream.received] == [
        ("POST", "/v1/responses"),
        ("GET", f"/v1/responses/{wire.RESPONSE_ID}"),
        ("DELETE", f"/v1/responses/{wire.RESPONSE_ID}"),
    ]


def test_upstream_error_passes_as_sent(gateway: tuple[str, wire.ResponsesUpstream]) -> None:
    url, upstream = gateway
    error = (
        b'{"error":{"message":"Previous response with id \'resp_x\' not found.","type":"invalid_request_error",'
        b'"param":"previous_response_id","code":"previous_response_not_found"}}'
    )
    upstream.replies.clear()
    upstream.json(error, status=400)
    response = httpx.post(
        url + "/v1/responses", json={"model": "gpt-5.5", "input": "Hi", "previous_response_id": "resp_x"}, timeout=10
    )
    assert response.status_code == 400 and response.content == error
