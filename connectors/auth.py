"""Tokens for the Dataverse Web API through MSAL: client secret, client certificate or managed identity.

MSAL does the protocol and the in-memory token cache (a cached token is reused until close to expiry,
then refreshed); this module only builds the right MSAL client from explicit settings and adds
`invalidate()`, which drops cached access tokens so the next `token()` fetches a fresh one (used once
after a 401). MSAL needs an https authority; for a non-Microsoft authority host (the local mock) instance
discovery is switched off. MSAL's HTTP goes through a requests.Session with `trust_env=False` so
REQUESTS_CA_BUNDLE cannot override the CA bundle we pass (stack-pitfalls Q5).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urlparse

import msal  # type: ignore[import-untyped]
import requests

log = logging.getLogger(__name__)

_MICROSOFT_HOSTS = (
    "login.microsoftonline.com",
    "login.microsoft.com",
    "login.windows.net",
    "sts.windows.net",
    "login.chinacloudapi.cn",
    "login.microsoftonline.us",
    "login.microsoftonline.de",
)


class AuthError(Exception):
    """No token could be obtained. status 401 for rejected credentials, 503 when the IdP is unreachable."""

    def __init__(self, message: str, *, code: str = "AuthenticationFailed", status: int = 401):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class TokenProvider(Protocol):
    def token(self) -> str: ...

    def invalidate(self) -> None: ...


def http_session(ca_bundle: str | None = None) -> requests.Session:
    """A session that ignores REQUESTS_CA_BUNDLE/proxies from the environment and trusts `ca_bundle`
    (or the default certifi bundle when None)."""
    session = requests.Session()
    session.trust_env = False
    session.verify = ca_bundle if ca_bundle else True
    return session


def is_microsoft_authority(authority: str) -> bool:
    return (urlparse(authority).hostname or "").lower() in _MICROSOFT_HOSTS


class MsalTokenProvider:
    """`token()` returns a bearer token for `scope` (cached by MSAL); `invalidate()` forces a new one.

    `app_factory` builds the msal ConfidentialClientApplication or ManagedIdentityClient on first use
    (MSAL reads the authority's OpenID configuration when constructed, so building it lazily keeps
    constructing the provider free of network I/O). Thread-safe.
    """

    def __init__(
        self,
        app_factory: Callable[[], Any],
        scope: str,
        *,
        managed_identity: bool = False,
        description: str = "",
    ):
        self._factory = app_factory
        self._app: Any | None = None
        self.scope = scope
        self.managed_identity = managed_identity
        self.description = description or ("managed identity" if managed_identity else "client credentials")
        self._lock = threading.Lock()
        self.acquired = 0  # tokens fetched from the IdP (not from cache); for tests and logs

    @property
    def app(self) -> Any:
        if self._app is None:
            self._app = self._factory()
        return self._app

    def _cache(self) -> Any:
        if self._app is None:
            return None
        return getattr(self._app, "token_cache", None) or getattr(self._app, "_token_cache", None)

    def token(self) -> str:
        with self._lock:
            started = time.perf_counter()
            try:
                if self.managed_identity:
                    resource = self.scope[: -len("/.default")] if self.scope.endswith("/.default") else self.scope
                    result = self.app.acquire_token_for_client(resource=resource)
                else:
                    result = self.app.acquire_token_for_client(scopes=[self.scope])
            except (requests.RequestException, ValueError) as exc:
                # ValueError: MSAL could not read the authority's OpenID configuration.
                raise AuthError(
                    f"token endpoint unreachable ({self.description}): {type(exc).__name__}: {exc}"[:500],
                    code="TokenEndpointUnreachable",
                    status=503,
                ) from exc
            if not isinstance(result, dict) or "access_token" not in result:
                result = result if isinstance(result, dict) else {}
                error = result.get("error", "unknown_error")
                desc = str(result.get("error_description", "")).split("\n")[0][:300]
                raise AuthError(f"token request rejected ({self.description}): {error}: {desc}", code=str(error))
            if result.get("token_source") != "cache":
                self.acquired += 1
                log.info(
                    "acquired a Dataverse token (%s) in %.0f ms, expires in %s s",
                    self.description,
                    (time.perf_counter() - started) * 1000,
                    result.get("expires_in"),
                )
            return str(result["access_token"])

    def invalidate(self) -> None:
        """Forget cached access tokens; the next token() asks the IdP again."""
        with self._lock:
            cache = self._cache()
            if cache is None:
                return
            for entry in list(cache.search(msal.TokenCache.CredentialType.ACCESS_TOKEN)):
                cache.remove_at(entry)


class StaticTokenProvider:
    """A fixed token (tests, or a token obtained elsewhere). invalidate() is counted, not acted on."""

    def __init__(self, value: str):
        self.value = value
        self.invalidations = 0

    def token(self) -> str:
        return self.value

    def invalidate(self) -> None:
        self.invalidations += 1


def _certificate_credential(cert_path: str, thumbprint: str) -> dict[str, str]:
    try:
        with open(cert_path, encoding="ascii") as fh:
            pem = fh.read()
    except OSError as exc:
        raise AuthError(
            f"cannot read the client certificate {cert_path!r}: {exc}",
            code="CertificateUnreadable",
            status=500,
        ) from exc
    if "PRIVATE KEY" not in pem:
        raise AuthError(f"{cert_path!r} holds no PEM private key", code="CertificateUnreadable", status=500)
    credential = {"private_key": pem, "thumbprint": thumbprint.replace(":", "").strip()}
    if "BEGIN CERTIFICATE" in pem:
        credential["public_certificate"] = pem  # sent as x5c (subject name/issuer auth)
    return credential


def token_provider_from(
    *,
    authority: str,
    client_id: str,
    scope: str,
    client_secret: str | None = None,
    cert_path: str | None = None,
    cert_thumbprint: str | None = None,
    managed_identity: bool = False,
    ca_bundle: str | None = None,
    http_client: Any | None = None,
    timeout: float = 30.0,
) -> MsalTokenProvider:
    """Build the provider for one of the three credential kinds (checked in this order: managed identity,
    certificate, secret). `http_client` replaces the HTTP session (unit tests use a fake one)."""
    http = http_client if http_client is not None else http_session(ca_bundle)
    if managed_identity:

        def managed() -> Any:
            return msal.ManagedIdentityClient(
                msal.SystemAssignedManagedIdentity(), http_client=http, token_cache=msal.TokenCache()
            )

        return MsalTokenProvider(managed, scope, managed_identity=True)
    if not authority.startswith("https://"):
        raise AuthError(f"the authority must be an https URL, got {authority!r}", code="InvalidAuthority", status=500)
    credential: str | dict[str, str]
    if cert_path:
        if not cert_thumbprint:
            raise AuthError("a client certificate needs its thumbprint", code="CertificateUnreadable", status=500)
        credential = _certificate_credential(cert_path, cert_thumbprint)
        kind = "client certificate"
    elif client_secret:
        credential = client_secret
        kind = "client secret"
    else:
        raise AuthError(
            "no credential: give a client secret, a certificate or managed identity",
            code="NoCredential",
            status=500,
        )

    def confidential() -> Any:
        return msal.ConfidentialClientApplication(
            client_id,
            client_credential=credential,
            authority=authority,
            http_client=http,
            timeout=timeout,
            instance_discovery=False if not is_microsoft_authority(authority) else None,
            token_cache=msal.TokenCache(),
        )

    return MsalTokenProvider(confidential, scope, description=kind)
