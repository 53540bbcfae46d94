"""Verify an idbridge back-channel logout token, as an app's logout endpoint would (OpenID
Connect Back-Channel Logout 1.0, section 2.6), with PyJWT.

    python3 backchannel_logout.py ISSUER CLIENT_ID LOGOUT_TOKEN

Prints the device (`sid`) and user (`sub`) to sign out and exits 0; exits 1 for a token to
refuse (answer 400). An endpoint then ends its own sessions of that `sid`, remembers the `jti`
for the token's two minutes to refuse a replay, and answers 200.
"""
import json
import sys

import jwt  # pip install "pyjwt[crypto]"

EVENT = "http://schemas.openid.net/event/backchannel-logout"


def verify_logout_token(issuer, client_id, token, jwks=None):
    jwks = jwks or jwt.PyJWKClient(f"{issuer}/.well-known/jwks.json", cache_keys=True, lifespan=300)
    if jwt.get_unverified_header(token).get("typ") != "logout+jwt":
        raise jwt.InvalidTokenError("not a logout token")
    key = jwks.get_signing_key_from_jwt(token)
    claims = jwt.decode(
        token,
        key.key,
        algorithms=["ES256", "EdDSA", "RS256"],
        audience=client_id,
        issuer=issuer,
        leeway=30,
        options={"require": ["iat", "exp", "jti", "sub", "sid", "events"]},
    )
    if not isinstance(claims.get("events"), dict) or EVENT not in claims["events"] or "nonce" in claims:
        raise jwt.InvalidTokenError("not a logout token")
    return claims


if __name__ == "__main__":
    issuer, client_id, token = sys.argv[1:4]
    try:
        claims = verify_logout_token(issuer, client_id, token)
    except jwt.PyJWTError as e:
        print(f"400 invalid logout token: {e}")
        sys.exit(1)
    print(json.dumps({"sid": claims["sid"], "sub": claims["sub"]}))
