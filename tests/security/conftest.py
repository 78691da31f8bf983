"""Fixtures for HTTP-level security tests: an app with CDS_AUTH=required, a trusted-issuers file
with freshly generated ES384 and RS384 keys, a token factory, and log capture."""

from __future__ import annotations

import io
import itertools
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from cds_service.logs import JsonLineFormatter
from tests.conftest import NOW

BASE = "https://cds.example.org"
ISS = "https://ehr.example.test"
PV = "foot-drop-patient-view"
DISCOVERY_AUD = f"{BASE}/cds-services"
SERVICE_AUD = f"{BASE}/cds-services/{PV}"
FEEDBACK_AUD = f"{BASE}/cds-services/{PV}/feedback"

_jti = itertools.count()


@dataclass(frozen=True)
class Keys:
    es: ec.EllipticCurvePrivateKey
    rs: rsa.RSAPrivateKey
    stranger: ec.EllipticCurvePrivateKey  # not in any trusted JWK Set


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys(
        es=ec.generate_private_key(ec.SECP384R1()),
        rs=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        stranger=ec.generate_private_key(ec.SECP384R1()),
    )


@pytest.fixture
def issuers_file(tmp_path: Path, keys: Keys) -> Path:
    es = ECAlgorithm.to_jwk(keys.es.public_key(), as_dict=True)
    rs = RSAAlgorithm.to_jwk(keys.rs.public_key(), as_dict=True)
    jwks = {"keys": [es | {"kid": "es-1", "alg": "ES384", "use": "sig"},
                     rs | {"kid": "rs-1", "alg": "RS384", "use": "sig"}]}
    (tmp_path / "ehr-jwks.json").write_text(json.dumps(jwks))
    path = tmp_path / "issuers.yaml"
    path.write_text(f"issuers:\n  - iss: {ISS}\n    jwks_file: ehr-jwks.json\n")
    return path


@pytest.fixture
def settings_overrides(issuers_file: Path) -> dict[str, Any]:
    return {"auth": "required", "trusted_issuers_file": issuers_file, "public_base_url": BASE}


def claims(aud: Any, **overrides: Any) -> dict[str, Any]:
    now = int(NOW.timestamp())
    base = {"iss": ISS, "aud": aud, "iat": now, "exp": now + 300, "jti": f"jti-{next(_jti)}"}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


@pytest.fixture
def make_token(keys: Keys) -> Callable[..., str]:
    """make_token(aud, alg="ES384", key=None, kid=None, headers=None, **claim_overrides)."""

    def make(aud: Any, *, alg: str = "ES384", key: Any = None, kid: str | None = None,
             headers: dict[str, Any] | None = None, **overrides: Any) -> str:
        signing_key = key if key is not None else (keys.es if alg == "ES384" else keys.rs)
        header = {"typ": "JWT", "kid": kid or ("es-1" if alg == "ES384" else "rs-1")}
        header.update(headers or {})
        return jwt.encode(claims(aud, **overrides), signing_key, algorithm=alg, headers=header)

    return make


class LogCapture:
    """Everything logged while active: the JSON lines our formatter writes, and the raw records
    (message, args and structured fields) so a secret cannot hide behind the formatter's mask."""

    def __init__(self) -> None:
        self.stream = io.StringIO()
        self.records: list[logging.LogRecord] = []

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def raw_text(self) -> str:
        parts = []
        for record in self.records:
            parts.append(str(record.msg))
            parts.append(repr(record.args))
            parts.append(repr(getattr(record, "fields", None)))
            if record.exc_info and record.exc_info[1] is not None:
                parts.append(repr(record.exc_info[1]))
        return "\n".join(parts)

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text.splitlines() if line.strip()]


@pytest.fixture
def captured_logs() -> Iterator[LogCapture]:
    capture = LogCapture()
    formatted = logging.StreamHandler(capture.stream)
    formatted.setFormatter(JsonLineFormatter())

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            capture.records.append(record)

    raw = Keep()
    root = logging.getLogger()
    root.addHandler(formatted)
    root.addHandler(raw)
    try:
        yield capture
    finally:
        root.removeHandler(formatted)
        root.removeHandler(raw)
