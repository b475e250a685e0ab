"""Token service (OpenID discovery + client-credentials grant, as MSAL expects) and the TLS certificate.

The certificate is made with `cryptography` (already a dependency of msal): a small CA plus a leaf
with SAN 127.0.0.1 and localhost, so clients can trust the CA PEM even under strict X.509 checks.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def make_certificate(directory: Path) -> tuple[Path, Path, Path]:
    """Writes ca.pem, cert.pem (leaf + CA chain) and key.pem into `directory`; returns their paths."""
    now = datetime.now(UTC) - timedelta(days=1)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Mock Dataverse Test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(IPv4Address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    ca_path, cert_path, key_path = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    ca_path.write_bytes(ca_pem)
    cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM) + ca_pem)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return ca_path, cert_path, key_path


@dataclass
class Token:
    client_id: str
    expires: float  # time.monotonic() deadline


class TokenService:
    """Issues opaque bearer tokens for one client id/secret; tokens expire after `ttl` seconds."""

    def __init__(self, tenant_id: str, client_id: str, client_secret: str, ttl: int):
        self.tenant_id, self.client_id, self.client_secret, self.ttl = (
            tenant_id,
            client_id,
            client_secret,
            ttl,
        )
        self._tokens: dict[str, Token] = {}
        self._lock = threading.Lock()

    def openid_configuration(self, base: str) -> dict[str, object]:
        t = f"{base}/{self.tenant_id}"
        return {
            "issuer": f"{t}/v2.0",
            "authorization_endpoint": f"{t}/oauth2/v2.0/authorize",
            "token_endpoint": f"{t}/oauth2/v2.0/token",
            "device_authorization_endpoint": f"{t}/oauth2/v2.0/devicecode",
            "jwks_uri": f"{t}/discovery/v2.0/keys",
            "response_types_supported": ["code", "token"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
            "grant_types_supported": ["client_credentials"],
            "tenant_region_scope": "EU",
        }

    def issue(self, form: dict[str, str], basic: tuple[str, str] | None) -> tuple[int, dict[str, object]]:
        """OAuth2 token endpoint (RFC 6749 errors with AADSTS-like descriptions)."""
        cid, secret = form.get("client_id"), form.get("client_secret")
        if basic:
            cid, secret = basic
        if form.get("grant_type") != "client_credentials":
            return 400, _oauth_error(
                "unsupported_grant_type", "AADSTS70003: only client_credentials is supported."
            )
        if cid != self.client_id:
            return 400, _oauth_error(
                "unauthorized_client", f"AADSTS700016: Application with identifier '{cid}' was not found."
            )
        if not secret or not secrets.compare_digest(secret, self.client_secret):
            return 401, _oauth_error("invalid_client", "AADSTS7000215: Invalid client secret provided.")
        scope = form.get("scope", "")
        if not scope.endswith("/.default"):
            return 400, _oauth_error(
                "invalid_scope",
                f"AADSTS1002012: The provided value for scope {scope} "
                "is not valid. Client credential flows must have a scope value with /.default.",
            )
        token = secrets.token_urlsafe(32)
        with self._lock:
            now = time.monotonic()
            self._tokens = {k: v for k, v in self._tokens.items() if v.expires > now}
            self._tokens[token] = Token(cid, now + self.ttl)
        return 200, {
            "token_type": "Bearer",
            "expires_in": self.ttl,
            "ext_expires_in": self.ttl,
            "access_token": token,
        }

    def check(self, authorization: str | None) -> tuple[str | None, str]:
        """Returns (client_id, "") for a valid bearer token, else (None, reason)."""
        if not authorization or not authorization.lower().startswith("bearer "):
            return None, "The user is not authenticated. Bearer token is missing."
        tok = self._tokens.get(authorization[7:].strip())
        if tok is None:
            return None, "The access token is invalid."
        if tok.expires <= time.monotonic():
            return None, "The access token has expired."
        return tok.client_id, ""


def _oauth_error(code: str, description: str) -> dict[str, object]:
    return {
        "error": code,
        "error_description": description,
        "error_codes": [int(description[5:12]) if description[5:12].isdigit() else 0],
        "timestamp": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ"),
        "trace_id": secrets.token_hex(8),
    }
