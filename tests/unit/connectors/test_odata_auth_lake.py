"""Quoting (a value can never change a filter's meaning), MSAL provider on a fake HTTP client, and the
lake's row -> Arrow conversion."""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors import odata
from connectors.auth import AuthError, token_provider_from
from connectors.lake import LakeError, rows_to_table, schema_from_attributes
from functions.http import status_of


# ------------------------------------------------------------------------------------------- quoting
def _tokens(filter_text: str) -> list[str]:
    """Split an OData filter into tokens, treating '...' (with '' escapes) as one string literal."""
    return re.findall(r"'(?:[^']|'')*'|[^\s']+", filter_text)


@given(st.text())
def test_any_string_stays_one_literal(value: str) -> None:
    f = odata.filter_eq("name", value)
    tokens = _tokens(f)
    assert tokens[:2] == ["name", "eq"] and len(tokens) == 3
    literal = tokens[2]
    assert literal[0] == literal[-1] == "'" and literal[1:-1].replace("''", "'") == value


def test_injection_attempts_are_inert() -> None:
    hostile = "x' or statecode eq 0 or name eq 'y"
    assert odata.filter_eq("name", hostile) == "name eq 'x'' or statecode eq 0 or name eq ''y'"
    assert odata.filter_in("name", ["a'b", "c"]) == "(name eq 'a''b' or name eq 'c')"
    assert odata.filter_in("name", []) == "false"


@pytest.mark.parametrize(
    "value,literal",
    [
        (None, "null"),
        (True, "true"),
        (False, "false"),
        (3, "3"),
        (2.5, "2.5"),
        (Decimal("1.10"), "1.10"),
        (uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
        (dt.date(2024, 5, 6), "2024-05-06"),
        (dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.timezone(dt.timedelta(hours=2))), "2024-05-06T05:08:09Z"),
    ],
)
def test_literals(value: Any, literal: str) -> None:
    assert odata.quote(value) == literal


@pytest.mark.parametrize("value", [float("nan"), float("inf"), dt.datetime(2024, 1, 1), object(), [1]])
def test_unquotable_values_are_refused(value: Any) -> None:
    with pytest.raises(odata.ODataValueError) as info:
        odata.quote(value)
    assert status_of(info.value) == 400


@pytest.mark.parametrize("col", ["name eq 'x' or 1", "a b", "", "1abc", "x)", "name;drop"])
def test_bad_column_names_are_refused(col: str) -> None:
    with pytest.raises(odata.ODataValueError):
        odata.filter_eq(col, 1)


def test_guid_and_key_segments() -> None:
    g = odata.guid("{6B9CE798-221A-4260-90B2-2A95ED51A5BC}")
    assert (
        odata.filter_eq("_processid_value", g) == "_processid_value eq 6b9ce798-221a-4260-90b2-2a95ed51a5bc"
    )
    with pytest.raises(odata.ODataValueError):
        odata.guid("6b9ce798' or 1 eq 1")
    assert odata.key_segment("accounts", str(g)) == f"accounts({g})"
    assert odata.key_segment("s", {"k": "a/b?c#d%"}) == "s(k='a%2Fb%3Fc%23d%25')"
    with pytest.raises(odata.ODataValueError):
        odata.key_segment("accounts", "not-a-guid")


# ------------------------------------------------------------------------------------------- auth
class FakeHttp:
    """MSAL's http_client: OpenID configuration and a token endpoint, counting token requests."""

    def __init__(self, error: str | None = None):
        self.token_posts = 0
        self.error = error

    class _R:
        def __init__(self, status: int, body: dict):
            self.status_code, self.text, self.headers = status, json.dumps(body), {}

        def raise_for_status(self) -> None:
            if self.status_code >= 400:
                raise RuntimeError(self.status_code)

    def get(self, url: str, **kw: Any) -> Any:
        if "discovery/instance" in url:
            return self._R(200, {"metadata": []})
        base = url.split("/v2.0/")[0]
        return self._R(
            200,
            {
                "authorization_endpoint": base + "/oauth2/v2.0/authorize",
                "token_endpoint": base + "/oauth2/v2.0/token",
                "issuer": base + "/v2.0",
            },
        )

    def post(self, url: str, data: Any = None, **kw: Any) -> Any:
        self.token_posts += 1
        if self.error:
            return self._R(
                401, {"error": self.error, "error_description": "AADSTS7000215: Invalid client secret"}
            )
        assert data["grant_type"] == "client_credentials" and data["scope"] == "https://org/.default"
        return self._R(
            200, {"token_type": "Bearer", "expires_in": 3600, "access_token": f"t{self.token_posts}"}
        )

    def close(self) -> None:
        pass


def _provider(http: FakeHttp, **kw: Any) -> Any:
    return token_provider_from(
        authority="https://login.microsoftonline.com/tenant",
        client_id="cid",
        scope="https://org/.default",
        http_client=http,
        **kw,
    )


def test_secret_token_is_cached_and_invalidate_forces_a_new_one() -> None:
    http = FakeHttp()
    p = _provider(http, client_secret="s")
    assert http.token_posts == 0  # building the provider does no I/O
    assert p.token() == "t1" and p.token() == "t1" and http.token_posts == 1
    p.invalidate()
    assert p.token() == "t2" and http.token_posts == 2


def test_rejected_secret_is_a_typed_error() -> None:
    p = _provider(FakeHttp(error="invalid_client"), client_secret="wrong")
    with pytest.raises(AuthError) as info:
        p.token()
    assert info.value.status == 401 and info.value.code == "invalid_client" and "wrong" not in str(info.value)


def test_no_credential_and_bad_certificate_are_refused(tmp_path: Any) -> None:
    with pytest.raises(AuthError):
        _provider(FakeHttp())
    bad = tmp_path / "c.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n")
    with pytest.raises(AuthError) as info:
        _provider(FakeHttp(), cert_path=str(bad), cert_thumbprint="AB")
    assert info.value.code == "CertificateUnreadable"


def test_certificate_credential(tmp_path: Any) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path = tmp_path / "k.pem"
    path.write_bytes(pem)
    http = FakeHttp()
    p = _provider(http, cert_path=str(path), cert_thumbprint="AB:CD:EF:01")
    assert p.token() == "t1" and p.description == "client certificate"


def test_managed_identity_uses_msal_managed_identity_client() -> None:
    p = token_provider_from(
        authority="",
        client_id="",
        scope="https://org/.default",
        managed_identity=True,
        http_client=FakeHttp(),
    )
    assert p.managed_identity and type(p.app).__name__ == "ManagedIdentityClient"


# ------------------------------------------------------------------------------------------- lake rows
ATTRS = [
    {"name": "id", "type": "Uniqueidentifier"},
    {"name": "v", "type": "Money"},
    {"name": "n", "type": "Picklist"},
    {"name": "b", "type": "Boolean"},
    {"name": "d", "type": "DateTime"},
    {"name": "s", "type": "Memo"},
]


def test_rows_to_table_types_and_etag() -> None:
    schema = schema_from_attributes(ATTRS, key="id")
    t = rows_to_table(
        [
            {
                "@odata.etag": 'W/"5"',
                "id": "a",
                "v": 3,
                "n": "2",
                "b": False,
                "d": "2024-02-03",
                "s": {"x": 1},
                "extra": 1,
            },
            {"id": "b"},
        ],
        schema,
    )
    assert t.schema.names == ["id", "b", "d", "n", "s", "v", "_etag"]
    row = t.to_pylist()[0]
    assert row["v"] == 3.0 and row["n"] == 2 and row["b"] is False and row["_etag"] == 'W/"5"'
    assert row["d"] == dt.datetime(2024, 2, 3, tzinfo=dt.UTC) and row["s"] == '{"x": 1}'
    assert t.schema.field("d").type == pa.timestamp("us", tz="UTC")
    assert t.to_pylist()[1]["v"] is None


def test_rows_that_do_not_fit_the_schema_raise_a_typed_error() -> None:
    schema = schema_from_attributes(ATTRS, key="id")
    with pytest.raises(LakeError) as info:
        rows_to_table([{"id": "a", "n": "not a number"}], schema)
    assert info.value.code == "SchemaMismatch" and "'n'" in str(info.value)
