"""Verify an idbridge access token offline, as a Python API server would (PyJWT's PyJWKClient).

    python3 resource_server.py ISSUER AUDIENCE REQUIRED_SCOPE TOKEN

Prints the token's claims and exits 0 when the token is valid and carries the scope; exits 1
(invalid: answer 401) or 3 (valid but missing the scope: answer 403).
"""
import json
import sys

import jwt  # pip install "pyjwt[crypto]"


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


if __name__ == "__main__":
    issuer, audience, scope, token = sys.argv[1:5]
    try:
        claims = verify(issuer, audience, token)
    except jwt.PyJWTError as e:
        print(f"401 invalid_token: {e}")
        sys.exit(1)
    if scope not in claims.get("scope", "").split():
        print(f"403 insufficient_scope: needs {scope}")
        sys.exit(3)
    print(json.dumps(claims))
