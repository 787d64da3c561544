"""Standard Webhooks signing: published vectors, a second implementation, receivers."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
import standardwebhooks
from aiohttp import ClientResponse, web
from multidict import CIMultiDict, CIMultiDictProxy
from pytest_aiohttp import AiohttpClient

from dispatcher.webhooks import (
    WEBHOOK,
    WebhookVerificationError,
    generate_secret,
    generate_signing_key,
    public_key_of,
    require_signature,
    sign,
    signature_middleware,
    verify,
)

# Published vectors: standard-webhooks/standard-webhooks, the Python library's
# test_sign_function (HMAC) and the Go library's TestAsymmetricWebhookSign (ed25519).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_PRIVATE_KEY = "whsk_VEVTVFNJR05JTkdLRVlET05PVFVTRVRISVNGT1JBTlk="
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = '{"test": 2432232314}'
VECTOR_V1 = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
VECTOR_V1A = (
    "v1a,tQ9V2XOqn7jL/DQenEFpqIugdBVtiMmER5mhSkXBNwM0mkATuDe6KYYUuxqtaiHeYGb7KaaBRdM5WqyeFiL8Ag=="
)

NOW = 1_700_000_000
BODY = b'{"type": "job.succeeded", "data": {"id": "job_1"}}'
PAYLOAD = {"type": "job.succeeded", "data": {"id": "job_1"}}


def signed(secret: str | list[str], *, at: int = NOW, body: bytes = BODY) -> dict[str, str]:
    return sign(secret, "msg_1", at, body)


# --- published vectors -------------------------------------------------------------------


def test_sign_matches_published_hmac_vector() -> None:
    headers = sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY)
    assert headers["webhook-signature"] == VECTOR_V1


def test_sign_matches_published_ed25519_vector() -> None:
    headers = sign(VECTOR_PRIVATE_KEY, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY)
    assert headers["webhook-signature"] == VECTOR_V1A


def test_verify_accepts_published_hmac_vector() -> None:
    headers = {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TIMESTAMP),
        "webhook-signature": VECTOR_V1,
    }
    assert verify(VECTOR_SECRET, headers, VECTOR_BODY, now=VECTOR_TIMESTAMP) == {"test": 2432232314}


# --- sign ----------------------------------------------------------------------------------


def test_sign_returns_the_three_webhook_headers() -> None:
    headers = sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY)
    assert headers == {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": "1614265330",
        "webhook-signature": VECTOR_V1,
    }


def test_sign_takes_an_aware_datetime_as_its_whole_unix_seconds() -> None:
    moment = datetime.fromtimestamp(VECTOR_TIMESTAMP + 0.9, tz=timezone(timedelta(hours=1)))
    headers = sign(VECTOR_SECRET, VECTOR_ID, moment, VECTOR_BODY)
    assert headers["webhook-timestamp"] == str(VECTOR_TIMESTAMP)
    assert headers["webhook-signature"] == VECTOR_V1


def test_sign_takes_a_naive_datetime_as_utc() -> None:
    naive = datetime.fromtimestamp(VECTOR_TIMESTAMP, tz=UTC).replace(tzinfo=None)
    headers = sign(VECTOR_SECRET, VECTOR_ID, naive, VECTOR_BODY)
    assert headers["webhook-signature"] == VECTOR_V1


def test_sign_gives_the_same_signature_for_str_and_bytes_body() -> None:
    as_str = sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY)
    as_bytes = sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY.encode())
    assert as_str == as_bytes


def test_sign_refuses_an_unknown_prefix_without_echoing_the_secret() -> None:
    with pytest.raises(ValueError, match="must start with") as caught:
        sign("sk_live_TOPSECRET", "msg_1", NOW, BODY)
    assert "TOPSECRET" not in str(caught.value)


def test_sign_refuses_bad_base64_without_echoing_the_secret() -> None:
    with pytest.raises(ValueError, match="not valid base64") as caught:
        sign("whsec_TOP!SECRET", "msg_1", NOW, BODY)
    assert "TOP!SECRET" not in str(caught.value)


def test_sign_refuses_a_public_key() -> None:
    _, public = generate_signing_key()
    with pytest.raises(ValueError, match="cannot sign"):
        sign(public, "msg_1", NOW, BODY)


def test_sign_refuses_an_empty_list_of_secrets() -> None:
    with pytest.raises(ValueError, match="no secret"):
        sign([], "msg_1", NOW, BODY)


# --- generated secrets and keys -----------------------------------------------------------


def test_generate_secret_is_24_random_bytes_after_whsec() -> None:
    secret = generate_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 24
    assert generate_secret() != secret


def test_generate_signing_key_gives_a_matching_pair() -> None:
    private, public = generate_signing_key()
    assert private.startswith("whsk_")
    assert public.startswith("whpk_")
    assert len(base64.b64decode(private.removeprefix("whsk_"))) == 32
    assert len(base64.b64decode(public.removeprefix("whpk_"))) == 32
    assert public_key_of(private) == public


def test_public_key_of_refuses_a_shared_secret() -> None:
    with pytest.raises(ValueError, match="private key"):
        public_key_of(generate_secret())


# --- cross-checks with the standardwebhooks package -------------------------------------------


def test_standardwebhooks_accepts_what_we_sign() -> None:
    secret = generate_secret()
    headers = sign(secret, "msg_1", int(time.time()), BODY)
    assert standardwebhooks.Webhook(secret).verify(BODY, headers) == PAYLOAD


def test_we_accept_what_standardwebhooks_signs() -> None:
    secret = generate_secret()
    moment = datetime.fromtimestamp(NOW, tz=UTC)
    signature = standardwebhooks.Webhook(secret).sign("msg_1", moment, BODY.decode())
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(NOW), "webhook-signature": signature}
    assert verify(secret, headers, BODY, now=NOW) == PAYLOAD


# --- verify ----------------------------------------------------------------------------------


def test_verify_returns_the_parsed_body() -> None:
    secret = generate_secret()
    assert verify(secret, signed(secret), BODY, now=NOW) == PAYLOAD


def test_verify_reads_header_names_case_insensitively_from_a_dict() -> None:
    secret = generate_secret()
    headers = {name.title(): value for name, value in signed(secret).items()}
    assert verify(secret, headers, BODY, now=NOW) == PAYLOAD


def test_verify_reads_headers_from_a_cimultidictproxy() -> None:
    secret = generate_secret()
    headers = CIMultiDictProxy(CIMultiDict({n.upper(): v for n, v in signed(secret).items()}))
    assert verify(secret, headers, BODY, now=NOW) == PAYLOAD


@pytest.mark.parametrize("name", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_a_missing_header_is_named_in_the_error(name: str) -> None:
    secret = generate_secret()
    headers = signed(secret)
    del headers[name]
    with pytest.raises(WebhookVerificationError, match=f"missing {name}"):
        verify(secret, headers, BODY, now=NOW)


def test_a_tampered_body_is_rejected() -> None:
    secret = generate_secret()
    tampered = BODY.replace(b"job_1", b"job_2")
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(secret, signed(secret), tampered, now=NOW)


def test_a_wrong_secret_is_rejected() -> None:
    headers = signed(generate_secret())
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(generate_secret(), headers, BODY, now=NOW)


def test_a_timestamp_six_minutes_old_is_rejected() -> None:
    secret = generate_secret()
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify(secret, signed(secret, at=NOW - 360), BODY, now=NOW)


def test_a_timestamp_six_minutes_ahead_is_rejected() -> None:
    secret = generate_secret()
    with pytest.raises(WebhookVerificationError, match="too new"):
        verify(secret, signed(secret, at=NOW + 360), BODY, now=NOW)


@pytest.mark.parametrize("offset", [-300, 300])
def test_a_timestamp_exactly_five_minutes_away_is_accepted(offset: int) -> None:
    secret = generate_secret()
    assert verify(secret, signed(secret, at=NOW + offset), BODY, now=NOW) == PAYLOAD


def test_tolerance_is_configurable() -> None:
    secret = generate_secret()
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify(secret, signed(secret, at=NOW - 61), BODY, tolerance=60, now=NOW)


@pytest.mark.parametrize("value", ["hello", "1700000000.5", "-1700000000", "1" * 40])
def test_a_malformed_timestamp_is_rejected(value: str) -> None:
    secret = generate_secret()
    headers = signed(secret) | {"webhook-timestamp": value}
    with pytest.raises(WebhookVerificationError, match="malformed webhook-timestamp"):
        verify(secret, headers, BODY, now=NOW)


def test_junk_and_unknown_versions_beside_a_good_signature_are_ignored() -> None:
    secret = generate_secret()
    headers = signed(secret)
    junk = ["v1", "v1,", ",abc", "v1,!!!", "v1,abc", "v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ=", "x"]
    headers["webhook-signature"] = "  ".join([*junk, headers["webhook-signature"], "v9,zz"])
    assert verify(secret, headers, BODY, now=NOW) == PAYLOAD


@pytest.mark.parametrize("value", ["v1", "v1,", "v1,!!!", "garbage", "v1,abc v1 ,,"])
def test_only_malformed_signatures_are_rejected(value: str) -> None:
    secret = generate_secret()
    headers = signed(secret) | {"webhook-signature": value}
    with pytest.raises(WebhookVerificationError):
        verify(secret, headers, BODY, now=NOW)


def test_a_body_that_is_not_json_is_rejected_even_when_signed() -> None:
    secret = generate_secret()
    with pytest.raises(WebhookVerificationError, match="not valid JSON"):
        verify(secret, signed(secret, body=b"not json"), b"not json", now=NOW)


def test_verification_errors_are_value_errors() -> None:
    assert issubclass(WebhookVerificationError, ValueError)


# --- ed25519 -------------------------------------------------------------------------------


def test_ed25519_signature_verifies_with_the_public_key() -> None:
    private, public = generate_signing_key()
    assert signed(private)["webhook-signature"].startswith("v1a,")
    assert verify(public, signed(private), BODY, now=NOW) == PAYLOAD


def test_ed25519_signature_fails_with_another_public_key() -> None:
    private, _ = generate_signing_key()
    _, other_public = generate_signing_key()
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(other_public, signed(private), BODY, now=NOW)


def test_ed25519_signature_over_a_tampered_body_fails() -> None:
    private, public = generate_signing_key()
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(public, signed(private), BODY + b" ", now=NOW)


def test_v1a_signature_does_not_verify_against_a_whsec_secret() -> None:
    private, _ = generate_signing_key()
    with pytest.raises(WebhookVerificationError, match="no valid v1 signature"):
        verify(generate_secret(), signed(private), BODY, now=NOW)


def test_v1_signature_does_not_verify_against_a_public_key() -> None:
    _, public = generate_signing_key()
    with pytest.raises(WebhookVerificationError, match="no valid v1a signature"):
        verify(public, signed(generate_secret()), BODY, now=NOW)


def test_a_private_key_also_verifies_what_it_signed() -> None:
    private, _ = generate_signing_key()
    assert verify(private, signed(private), BODY, now=NOW) == PAYLOAD


# --- rotation -----------------------------------------------------------------------------


def test_rotation_signs_with_both_secrets_in_order() -> None:
    old, new = generate_secret(), generate_secret()
    both = signed([old, new])["webhook-signature"].split(" ")
    assert both == [signed(old)["webhook-signature"], signed(new)["webhook-signature"]]


@pytest.mark.parametrize("which", [0, 1])
def test_rotation_signature_verifies_with_either_secret_alone(which: int) -> None:
    old, new = generate_secret(), generate_secret()
    headers = signed([old, new])
    assert verify([old, new][which], headers, BODY, now=NOW) == PAYLOAD


def test_verify_accepts_a_match_with_any_of_several_secrets() -> None:
    secret = generate_secret()
    assert verify([generate_secret(), secret], signed(secret), BODY, now=NOW) == PAYLOAD


def test_verify_rejects_when_none_of_several_secrets_match() -> None:
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify([generate_secret(), generate_secret()], signed(generate_secret()), BODY, now=NOW)


def test_rotation_can_mix_hmac_and_ed25519() -> None:
    secret = generate_secret()
    private, public = generate_signing_key()
    headers = signed([secret, private])
    assert verify(secret, headers, BODY, now=NOW) == PAYLOAD
    assert verify(public, headers, BODY, now=NOW) == PAYLOAD


# --- aiohttp receivers ---------------------------------------------------------------------

SECRET = "whsec_" + base64.b64encode(b"receiver-test-secret-24b").decode()


async def echo(request: web.Request) -> web.Response:
    return web.json_response({"seen": request[WEBHOOK]})


def fresh(secret: str = SECRET, body: bytes = BODY) -> dict[str, str]:
    """Headers for a request sent now: the receivers check against the real clock."""
    return sign(secret, "msg_1", int(time.time()), body)


@pytest.fixture
def decorated_app() -> web.Application:
    app = web.Application()
    app.router.add_post("/hook", require_signature(SECRET)(echo))
    return app


@pytest.fixture
def middleware_app() -> web.Application:
    app = web.Application(middlewares=[signature_middleware(SECRET)])
    app.router.add_post("/hook", echo)
    return app


async def assert_unauthorized(resp: ClientResponse, detail: str) -> None:
    assert resp.status == 401
    assert resp.content_type == "application/problem+json"
    problem = await resp.json(content_type="application/problem+json")
    assert problem["type"] == "about:blank"
    assert problem["title"] == "Unauthorized"
    assert problem["status"] == 401
    assert detail in problem["detail"]


async def test_decorated_handler_sees_the_verified_payload(
    aiohttp_client: AiohttpClient, decorated_app: web.Application
) -> None:
    client = await aiohttp_client(decorated_app)
    resp = await client.post("/hook", data=BODY, headers=fresh())
    assert resp.status == 200
    assert await resp.json() == {"seen": PAYLOAD}


async def test_decorated_handler_answers_401_to_an_unsigned_request(
    aiohttp_client: AiohttpClient, decorated_app: web.Application
) -> None:
    client = await aiohttp_client(decorated_app)
    resp = await client.post("/hook", data=BODY)
    await assert_unauthorized(resp, "missing webhook-id")


async def test_decorated_handler_answers_401_to_a_bad_signature(
    aiohttp_client: AiohttpClient, decorated_app: web.Application
) -> None:
    client = await aiohttp_client(decorated_app)
    resp = await client.post("/hook", data=BODY, headers=fresh(generate_secret()))
    await assert_unauthorized(resp, "no matching signature")


async def test_decorated_handler_verifies_ed25519_with_a_public_key(
    aiohttp_client: AiohttpClient,
) -> None:
    private, public = generate_signing_key()
    app = web.Application()
    app.router.add_post("/hook", require_signature(public)(echo))
    client = await aiohttp_client(app)
    resp = await client.post("/hook", data=BODY, headers=fresh(private))
    assert resp.status == 200
    assert await resp.json() == {"seen": PAYLOAD}


def test_require_signature_refuses_a_bad_secret_at_setup() -> None:
    with pytest.raises(ValueError, match="must start with"):
        require_signature("not-a-secret")


async def test_middleware_lets_a_signed_request_through(
    aiohttp_client: AiohttpClient, middleware_app: web.Application
) -> None:
    client = await aiohttp_client(middleware_app)
    resp = await client.post("/hook", data=BODY, headers=fresh())
    assert resp.status == 200
    assert await resp.json() == {"seen": PAYLOAD}


async def test_middleware_answers_401_to_an_unsigned_request(
    aiohttp_client: AiohttpClient, middleware_app: web.Application
) -> None:
    client = await aiohttp_client(middleware_app)
    resp = await client.post("/hook", data=BODY)
    await assert_unauthorized(resp, "missing webhook-id")


async def test_middleware_answers_401_to_a_tampered_body(
    aiohttp_client: AiohttpClient, middleware_app: web.Application
) -> None:
    client = await aiohttp_client(middleware_app)
    resp = await client.post("/hook", data=BODY + b" ", headers=fresh())
    await assert_unauthorized(resp, "no matching signature")
