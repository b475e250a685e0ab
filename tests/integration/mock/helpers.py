"""Real-HTTP helpers for the mock's integration tests: an MSAL-authenticated requests session."""

from __future__ import annotations

from typing import Any

import msal
import requests


def session(info: dict[str, Any]) -> requests.Session:
    """A session trusting the mock's CA (trust_env=False: REQUESTS_CA_BUNDLE would override verify)."""
    s = requests.Session()
    s.trust_env = False
    s.verify = info["ca_cert"]
    return s


def token(info: dict[str, Any], secret: str | None = None) -> dict[str, Any]:
    app = msal.ConfidentialClientApplication(
        info["client_id"],
        client_credential=secret or info["client_secret"],
        authority=info["authority"],
        instance_discovery=False,
        http_client=session(info),
    )
    return app.acquire_token_for_client(scopes=[info["resource"] + "/.default"])


class Client:
    """Minimal Web API client over real HTTPS with a bearer token from MSAL."""

    def __init__(self, info: dict[str, Any]):
        self.info = info
        self.s = session(info)
        tok = token(info)
        self.s.headers.update(
            {
                "Authorization": "Bearer " + tok["access_token"],
                "Accept": "application/json",
                "OData-MaxVersion": "4.0",
                "OData-Version": "4.0",
            }
        )

    def url(self, path: str) -> str:
        return path if path.startswith("https://") else self.info["api"] + path

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.s.get(self.url(path), **kw)

    def post(self, path: str, **kw: Any) -> requests.Response:
        return self.s.post(self.url(path), **kw)

    def patch(self, path: str, **kw: Any) -> requests.Response:
        return self.s.patch(self.url(path), **kw)

    def delete(self, path: str, **kw: Any) -> requests.Response:
        return self.s.delete(self.url(path), **kw)

    def control(self, method: str, path: str, body: Any = None) -> Any:
        r = self.s.request(method, self.info["url"] + path, json=body)
        r.raise_for_status()
        return r.json()
