"""The SMS channel: one POST per attempt to a Twilio-compatible messages API.

`POST {url}/2010-04-01/Accounts/{sid}/Messages.json` with the form fields `To`,
`From` and `Body`, authenticated with HTTP basic auth `sid:token`. The gateway
is the operator's own, so the session given here is not the guarded one that
webhooks use. Its answers are read like a webhook receiver's: any 2xx is
success, 429/503 with `Retry-After` are waited for, 410 stops the retries,
redirects are not followed. The auth token is in no error or body recorded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from urllib.parse import quote

import aiohttp

from dispatcher import __version__
from dispatcher.delivery.channel import Redactor
from dispatcher.delivery.messages import sms_text
from dispatcher.delivery.policy import AttemptResult
from dispatcher.delivery.webhook import MAX_RESPONSE_BYTES, http_result, read_at_most
from dispatcher.store.records import DueDelivery


class SmsSender:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        account_sid: str,
        auth_token: str,
        sender: str,
        timeout: float,
    ) -> None:
        self._session = session
        self._endpoint = (
            f"{url.rstrip('/')}/2010-04-01/Accounts/{quote(account_sid, safe='')}/Messages.json"
        )
        self._headers = {
            "authorization": aiohttp.encode_basic_auth(account_sid, auth_token),
            "user-agent": f"dispatcher/{__version__}",
        }
        self._sender = sender
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._timeout_seconds = timeout
        # A gateway that echoes the request must not put the token in our records.
        credentials = self._headers["authorization"].removeprefix("Basic ")
        self._redactor = Redactor(auth_token, quote(auth_token, safe=""), credentials)

    def __repr__(self) -> str:
        return f"SmsSender({self._endpoint!r})"

    async def send(self, due: DueDelivery) -> AttemptResult:
        try:
            text = sms_text(due.body)
        except ValueError as exc:
            # The body is fixed: every retry would fail the same way.
            return AttemptResult(ok=False, error=f"cannot build the text: {exc}", gone=True)
        form = {"To": due.delivery.target, "From": self._sender, "Body": text}
        try:
            async with self._session.post(
                self._endpoint,
                data=form,
                headers=self._headers,
                allow_redirects=False,
                timeout=self._timeout,
            ) as response:
                # Read a little past the limit so that a token across it is still found.
                body = await read_at_most(response, MAX_RESPONSE_BYTES + self._redactor.slack)
                return self._result(response.status, response.headers, body)
        except TimeoutError:
            return AttemptResult(ok=False, error=f"timed out after {self._timeout_seconds:g}s")
        except aiohttp.ClientError as exc:
            return self._failed(str(exc) or type(exc).__name__)
        except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
            return self._failed(f"{type(exc).__name__}: {exc}")

    def _result(self, status: int, headers: Mapping[str, str], body: bytes) -> AttemptResult:
        return http_result(status, headers, self._redactor.data(body))

    def _failed(self, error: str) -> AttemptResult:
        return self._redactor.failed(error)
