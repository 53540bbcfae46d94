"""Verify an idbridge access token offline, as a Python API server would (PyJWT's PyJWKClient).

    python3 resource_server.py ISSUER AUDIENCE REQUIRED_SCOPE TOKEN [DPOP_PROOF METHOD URL]

Prints the token's claims and exits 0 when the token is valid and carries the scope; exits 1
(invalid: answer 401) or 3 (valid but missing the scope: answer 403).

A DPoP-bound token (its `cnf.jkt`, RFC 9449) arrives as `Authorization: DPoP <token>` with a
`DPoP` proof header: pass the proof and the request's method and URL. The proof must be by the
token's key and for this request; a bound token without a proof is refused. A server also
remembers each proof's `jti` for 5 minutes and refuses it again (`SEEN_JTIS` below).
"""
import base64
import hashlib
import json
import sys
import time
import urllib.parse

import jwt  # pip install "pyjwt[crypto]"

PROOF_MAX_AGE = 300
SEEN_JTIS = {}  # (jkt, jti) -> expiry; in a server, shared by its requests


def verify(issuer, audience, token, jwks=None):
    # One PyJWKClient per process: it caches the JWKS and refetches on an unknown kid.
    jwks = jwks or jwt.PyJWKClient(f"{issuer}/.well-known/jwks.json", cache_keys=True, lifespan=300)
    if jwt.get_unverified_header(token).get("typ") != "at+jwt":  # RFC 9068: not an ID token
        raise jwt.InvalidTokenError("not an access token")
    key = jwks.get_signing_key_from_jwt(token)
    return jwt.decode(
        token,
        key.key,
        algorithms=["ES256", "EdDSA", "RS256"],
        audience=audience,
        issuer=issuer,
        # 30 s for clocks that differ: PyJWT refuses an `iat` even 1 s in its future without it.
        leeway=30,
        options={"require": ["exp", "iat", "sub", "iss", "aud"]},
    )


def b64url(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def thumbprint(jwk):
    """RFC 7638: the required members, sorted, no spaces, SHA-256."""
    members = {"EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x")}.get(jwk.get("kty"))
    if members is None or "d" in jwk:
        raise jwt.InvalidTokenError("the proof's jwk is not a public EC or OKP key")
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(canonical.encode()).digest())


def without_query(url):
    u = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((u.scheme.lower(), u.netloc.lower(), u.path, "", ""))


def verify_dpop(claims, token, proof, method, url):
    """RFC 9449 §7: a bound token needs a proof of this request by its key."""
    jkt = (claims.get("cnf") or {}).get("jkt")
    if jkt is None:
        raise jwt.InvalidTokenError("the token is not DPoP-bound")
    header = jwt.get_unverified_header(proof)
    if header.get("typ") != "dpop+jwt" or header.get("alg") not in ("ES256", "EdDSA"):
        raise jwt.InvalidTokenError("not a DPoP proof")
    if thumbprint(header.get("jwk", {})) != jkt:
        raise jwt.InvalidTokenError("the proof is not by the token's key")
    key = jwt.PyJWK(header["jwk"], header["alg"]).key
    p = jwt.decode(proof, key, algorithms=[header["alg"]], options={"verify_aud": False})
    now = int(time.time())
    if p.get("htm") != method or without_query(p.get("htu", "")) != without_query(url):
        raise jwt.InvalidTokenError("the proof is for another request")
    if not (now - PROOF_MAX_AGE <= int(p.get("iat", 0)) <= now + 5):
        raise jwt.InvalidTokenError("the proof is stale or from the future")
    if p.get("ath") != b64url(hashlib.sha256(token.encode()).digest()):
        raise jwt.InvalidTokenError("the proof is for another token")
    seen = (jkt, p.get("jti"))
    if not p.get("jti") or SEEN_JTIS.get(seen, 0) > now:
        raise jwt.InvalidTokenError("the proof was used before")
    SEEN_JTIS[seen] = now + PROOF_MAX_AGE + 5


if __name__ == "__main__":
    issuer, audience, scope, token = sys.argv[1:5]
    proof, method, url = (sys.argv[5:8] + [None, None, None])[:3]
    try:
        claims = verify(issuer, audience, token)
        if proof is not None:
            verify_dpop(claims, token, proof, method, url)
        elif "cnf" in claims:
            raise jwt.InvalidTokenError("a DPoP-bound token needs a DPoP proof")
    except (jwt.PyJWTError, KeyError, ValueError) as e:
        print(f"401 invalid_token: {e}")
        sys.exit(1)
    if scope not in claims.get("scope", "").split():
        print(f"403 insufficient_scope: needs {scope}")
        sys.exit(3)
    print(json.dumps(claims))
