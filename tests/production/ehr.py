"""A test EHR that signs CDS Hooks JWTs (ES384) with a key pinned in a trusted-issuers file."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

ISS = "https://ehr.test.example"
KID = "test-ehr-1"


class TestEhr:
    __test__ = False  # not a test class

    def __init__(self, directory: Path) -> None:
        self.key = ec.generate_private_key(ec.SECP384R1())
        public = ECAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        (directory / "keys").mkdir(parents=True, exist_ok=True)
        (directory / "keys" / "ehr.json").write_text(
            json.dumps({"keys": [{**public, "kid": KID, "alg": "ES384", "use": "sig"}]}))
        self.issuers_file = directory / "issuers.yaml"
        self.issuers_file.write_text(
            f"issuers:\n  - iss: {ISS}\n    jwks_file: keys/ehr.json\n")

    def token(self, audience: str, jti: str | None = None) -> str:
        now = int(time.time())
        claims = {"iss": ISS, "aud": audience, "iat": now, "exp": now + 300,
                  "jti": jti or uuid.uuid4().hex}
        return jwt.encode(claims, self.key, algorithm="ES384",
                          headers={"typ": "JWT", "kid": KID})
