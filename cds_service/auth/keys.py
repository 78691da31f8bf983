"""Public JSON Web Keys (RFC 7517): parsing a JWK Set and matching a key to a JWS algorithm.

Only asymmetric signature keys are ever accepted: EC on P-256/P-384/P-521 and RSA of at least
2048 bits. Symmetric (``oct``) keys are refused outright, so no token can be checked with HMAC.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from jwt.exceptions import InvalidKeyError

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey

# Every algorithm the verifier can ever accept. Anything configured outside this set (none,
# HS256, ...) is dropped, whatever the settings say.
ASYMMETRIC_ALGORITHMS: frozenset[str] = frozenset(
    {"ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
)
_EC_CURVE_FOR_ALG = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
_CURVE_NAMES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
MIN_RSA_BITS = 2048


class JwkError(ValueError):
    """A JWK or JWK Set is not usable."""


@dataclass(frozen=True)
class PublicJwk:
    """One public signature key out of a JWK Set."""

    kid: str
    kty: str  # "EC" or "RSA"
    alg: str | None  # the JWK's own "alg" member, when it names one
    key: PublicKey

    @property
    def curve(self) -> str | None:
        if isinstance(self.key, ec.EllipticCurvePublicKey):
            return _CURVE_NAMES.get(self.key.curve.name)
        return None

    def fits(self, alg: str) -> bool:
        """True when this key may verify a JWS signed with ``alg``."""
        if alg not in ASYMMETRIC_ALGORITHMS:
            return False
        if self.alg is not None and self.alg != alg:
            return False
        if alg.startswith("ES"):
            return self.kty == "EC" and self.curve == _EC_CURVE_FOR_ALG[alg]
        return self.kty == "RSA" and isinstance(self.key, rsa.RSAPublicKey)


def parse_jwk(raw: Any, *, allow_private: bool) -> PublicJwk:
    """Parse one JWK into a public key. Raises JwkError.

    ``allow_private=False`` refuses a JWK that carries private members (operators must never put a
    private key in the trusted-issuers config). With ``True`` (remote sets) the private part is
    simply discarded.
    """
    if not isinstance(raw, Mapping):
        raise JwkError("a JWK must be a JSON object")
    kid = raw.get("kid")
    if not isinstance(kid, str) or not kid:
        raise JwkError("JWK without a string 'kid'")
    kty = raw.get("kty")
    if kty not in ("EC", "RSA"):
        raise JwkError(f"JWK {kid!r}: kty {kty!r} is not EC or RSA")
    if not allow_private and _PRIVATE_MEMBERS & set(raw):
        raise JwkError(f"JWK {kid!r} contains private key material; ship the public key only")
    use = raw.get("use")
    if use is not None and use != "sig":
        raise JwkError(f"JWK {kid!r}: use {use!r} is not 'sig'")
    key_ops = raw.get("key_ops")
    if key_ops is not None and (not isinstance(key_ops, list) or "verify" not in key_ops):
        raise JwkError(f"JWK {kid!r}: key_ops does not include 'verify'")
    alg = raw.get("alg")
    if alg is not None and alg not in ASYMMETRIC_ALGORITHMS:
        raise JwkError(f"JWK {kid!r}: alg {alg!r} is not an accepted signature algorithm")
    public = {k: v for k, v in raw.items() if k not in _PRIVATE_MEMBERS}
    try:
        loaded = (
            ECAlgorithm.from_jwk(json.dumps(public))
            if kty == "EC"
            else RSAAlgorithm.from_jwk(json.dumps(public))
        )
    except (InvalidKeyError, ValueError, TypeError, KeyError) as exc:
        raise JwkError(f"JWK {kid!r}: {exc}") from None
    if isinstance(loaded, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        loaded = loaded.public_key()
    if isinstance(loaded, ec.EllipticCurvePublicKey):
        if loaded.curve.name not in _CURVE_NAMES:
            raise JwkError(f"JWK {kid!r}: curve {loaded.curve.name} is not accepted")
    elif isinstance(loaded, rsa.RSAPublicKey):
        if loaded.key_size < MIN_RSA_BITS:
            raise JwkError(f"JWK {kid!r}: RSA key of {loaded.key_size} bits is too short")
    else:  # pragma: no cover - from_jwk returns only the types above
        raise JwkError(f"JWK {kid!r}: unsupported key type")
    if alg is not None and not PublicJwk(kid, kty, alg, loaded).fits(alg):
        raise JwkError(f"JWK {kid!r}: alg {alg!r} does not match the key")
    return PublicJwk(kid=kid, kty=kty, alg=alg, key=loaded)


def parse_jwks(document: Any, *, strict: bool) -> tuple[PublicJwk, ...]:
    """Parse a JWK Set (``{"keys": [...]}``). Raises JwkError.

    ``strict=True`` (a file the operator ships) fails on any unusable key, on private material and
    on duplicate kids. ``strict=False`` (a set fetched from a jku) skips keys it cannot use, such
    as encryption keys published next to the signing keys.
    """
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise JwkError("a JWK Set must be a JSON object with a 'keys' array")
    parsed: list[PublicJwk] = []
    for index, raw in enumerate(document["keys"]):
        try:
            parsed.append(parse_jwk(raw, allow_private=not strict))
        except JwkError as exc:
            if strict:
                raise JwkError(f"keys[{index}]: {exc}") from None
    if strict:
        kids = [k.kid for k in parsed]
        duplicates = sorted({kid for kid in kids if kids.count(kid) > 1})
        if duplicates:
            raise JwkError(f"duplicate kid in JWK Set: {duplicates}")
    return tuple(parsed)
