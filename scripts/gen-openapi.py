#!/usr/bin/env python3
# Writes openapi.json, the HTTP API reference (served at /openapi.json). Edit this, run it, commit both;
# tests/api/operations.rs checks the document against the route table (src/http/mod.rs ROUTES).
import json
oauth_err = {"$ref": "#/components/schemas/OAuthError"}
problem = {"$ref": "#/components/schemas/Problem"}
def resp(desc, schema=None, ctype="application/json", headers=None):
    r = {"description": desc}
    if schema is not None:
        r["content"] = {ctype: {"schema": schema}}
    if headers:
        r["headers"] = headers
    return r
retry = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}
def oauth_errors(extra=None):
    e = {
        "400": resp("Bad request (`invalid_request`, `invalid_grant`, `invalid_scope`, `unsupported_grant_type`)", oauth_err),
        "401": resp("Client authentication failed (`invalid_client`)", oauth_err),
        "405": resp("Method not allowed (see `Allow`)", oauth_err),
        "413": resp("Body over 64 KiB", oauth_err),
        "429": resp("Too many requests from this address or client (`temporarily_unavailable`)", oauth_err, headers=retry),
        "503": resp("Database or provider unavailable, or too many secrets being verified (`temporarily_unavailable`)", oauth_err, headers=retry),
    }
    if extra: e.update(extra)
    return e
def v1_errors(extra=None):
    e = {
        "401": resp("Missing, invalid, expired or revoked access token (`WWW-Authenticate: Bearer`)", problem, "application/problem+json"),
        "405": resp("Method not allowed (see `Allow`)", problem, "application/problem+json"),
        "503": resp("Database unavailable", problem, "application/problem+json", headers=retry),
    }
    if extra: e.update(extra)
    return e
form = lambda props, required=(): {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": {"type": "object", "properties": props, "required": list(required)}}}}
s = lambda desc, **kw: dict({"type": "string", "description": desc}, **kw)
client_auth = {
    "client_id": s("public clients; confidential clients may use HTTP Basic instead"),
    "client_secret": s("confidential clients, when not using HTTP Basic"),
}
token_response = {"$ref": "#/components/schemas/TokenResponse"}
bearer = [{"bearer": []}]
crypto_security = [{"bearer": []}, {"basic": []}]
json_body = lambda props, required=(): {"required": True, "content": {"application/json": {"schema": {"type": "object", "properties": props, "required": list(required)}}}}
def crypto_errors():
    e = v1_errors({
        "400": resp("Malformed body or ciphertext; a ciphertext of another user or context, or altered", problem, "application/problem+json"),
        "403": resp("A client without scope crypto, or a user naming another user", problem, "application/problem+json"),
        "404": resp("The user was deleted; their keys are destroyed", problem, "application/problem+json"),
        "413": resp("Body over 64 KiB", problem, "application/problem+json"),
        "429": resp("Too many requests", problem, "application/problem+json", headers=retry),
    })
    e["401"] = resp("No or bad Bearer token, or failed HTTP Basic client authentication", problem, "application/problem+json")
    return e

def admin_page(summary, extra=None):
    responses = {"200": resp("The page", {"type": "string"}, "text/html"),
                 "303": resp("Not signed in: to `/admin/login`"),
                 "503": resp("The database is unavailable", {"type": "string"}, "text/html")}
    responses.update(extra or {})
    return {"get": {"summary": summary, "tags": ["admin"], "responses": responses}}

def admin_change(summary, fields=None, ok="303"):
    props = {"csrf": s("the session's anti-CSRF token, as the page's forms carry it")}
    props.update(fields or {})
    return {"post": {"summary": summary, "tags": ["admin"],
        "requestBody": form(props, ["csrf"]),
        "responses": {ok: resp("Done: back to the page" if ok == "303" else "Done", {"type": "string"}, "text/html"),
                      "403": resp("No admin session, or a missing or wrong anti-CSRF token: nothing changes", {"type": "string"}, "text/html"),
                      "404": resp("No such user, device or client", {"type": "string"}, "text/html")}}}

ADMIN_PATHS = {
    "/admin": admin_page("Overview: counts and 30 days of sign-ins and refresh-token reuse (server-side SVG)"),
    "/admin/login": {"get": {"summary": "Starts an admin sign-in through the browser flow (client `idbridge-admin`)", "tags": ["admin"],
        "responses": {"303": resp("To `/oauth/authorize`, with a `__Host-idbridge-admin-login` cookie")}}},
    "/admin/callback": {"get": {"summary": "The browser flow's return: opens a session for an admin", "tags": ["admin"],
        "parameters": [{"name": "code", "in": "query", "schema": {"type": "string"}}, {"name": "state", "in": "query", "schema": {"type": "string"}}],
        "responses": {"200": resp("Signed in: sets `__Host-idbridge-admin` (Secure, HttpOnly, SameSite=Strict, Path=/)", {"type": "string"}, "text/html"),
                      "400": resp("Unknown or expired sign-in", {"type": "string"}, "text/html"),
                      "403": resp("Not an admin: nothing is kept", {"type": "string"}, "text/html")}}},
    "/admin/logout": admin_change("Ends the session and revokes its device", ok="200"),
    "/admin/static/admin.css": {"get": {"summary": "The console's stylesheet", "tags": ["admin"], "responses": {"200": resp("CSS", {"type": "string"}, "text/css")}}},
    "/admin/users": admin_page("Users, newest first; `q` searches by user id, provider subject or exact e-mail (blind index)"),
    "/admin/users/{id}": admin_page("A user: identities, devices, recent events, actions", {"404": resp("No such user", {"type": "string"}, "text/html")}),
    "/admin/users/{id}/confirm": admin_page("The confirmation step of `action` (revoke-device with `device`, revoke-all, disable, enable, delete)"),
    "/admin/users/{id}/devices/{device}/revoke": admin_change("Revokes one device of the user (audited)"),
    "/admin/users/{id}/revoke-all": admin_change("Revokes every device of the user (audited)"),
    "/admin/users/{id}/disable": admin_change("Disables the user and revokes their devices (audited)"),
    "/admin/users/{id}/enable": admin_change("Enables the user (audited)"),
    "/admin/users/{id}/delete": admin_change("Deletes the user and destroys their data keys (audited)"),
    "/admin/audit": admin_page("The audit log, newest first, filtered by `user`, `actor`, `action`; paged by `before`"),
    "/admin/keys": admin_page("Signing keys: kid, algorithm, state, created"),
    "/admin/keys/rotate": admin_change("Publishes a new signing key now (audited)"),
    "/admin/clients": dict(admin_page("Clients: from the configuration (read-only) and made here"),
        **admin_change("Makes a client; a confidential one's secret is shown once (argon2 hash stored)",
            {"client_id": s("2 to 64 of a-z 0-9 . _ -"), "kind": s("public | confidential"),
             "redirect_uris": s("one per line: https, http on loopback, or a private-use scheme (RFC 8252)"),
             "scopes": s("space-separated")}, ok="201")),
    "/admin/clients/{id}/confirm-delete": admin_page("The confirmation step of deleting a client"),
    "/admin/clients/{id}/disable": admin_change("Disables a client made here (audited)"),
    "/admin/clients/{id}/enable": admin_change("Enables a client made here (audited)"),
    "/admin/clients/{id}/delete": admin_change("Deletes a client made here (audited)"),
}

doc = {
  "openapi": "3.1.0",
  "info": {"title": "idbridge", "version": "0.1.0",
           "description": "Checks a Google sign-in once, then issues per-device tokens of its own: RFC 9068 access tokens verifiable against the JWKS, and rotating opaque refresh tokens. Errors under /oauth follow RFC 6749 §5.2; elsewhere RFC 9457 problem+json."},
  "paths": {
    "/healthz": {"get": {"summary": "Liveness", "tags": ["operations"], "responses": {"200": resp("The process runs", {"type": "object"})}}},
    "/readyz": {"get": {"summary": "Readiness: the database answers and signing keys are loaded", "tags": ["operations"],
        "responses": {"200": resp("Ready", {"type": "object"}), "503": resp("Not ready", {"type": "object"}, headers=retry)}}},
    "/metrics": {"get": {"summary": "Prometheus metrics (text format 0.0.4)", "tags": ["operations"],
        "responses": {"200": resp("Metrics", {"type": "string"}, "text/plain")}}},
    "/openapi.json": {"get": {"summary": "This document", "tags": ["operations"], "responses": {"200": resp("OpenAPI 3.1", {"type": "object"})}}},
    "/.well-known/openid-configuration": {"get": {"summary": "Discovery (RFC 8414 / OIDC Discovery); lists only what exists", "tags": ["discovery"],
        "responses": {"200": resp("Discovery document", {"type": "object"})}}},
    "/.well-known/jwks.json": {"get": {"summary": "Every public key that can verify a live access token (`Cache-Control: public, max-age=300`)", "tags": ["discovery"],
        "responses": {"200": resp("JWK Set (RFC 7517)", {"type": "object", "properties": {"keys": {"type": "array", "items": {"type": "object"}}}})}}},
    "/oauth/authorize": {"get": {"summary": "Browser sign-in: authorization code with PKCE (RFC 6749 §4.1, RFC 7636, RFC 8252). Without `provider`, a page lets the person choose", "tags": ["oauth"],
        "parameters": [{"name": n, "in": "query", "required": r, "schema": {"type": "string"}, "description": d} for (n, r, d) in [
            ("response_type", True, "`code`"), ("client_id", True, "a registered client"),
            ("redirect_uri", True, "a registered redirect URI, exactly; a loopback one may use any port"),
            ("code_challenge", True, "PKCE S256 challenge (43 characters)"), ("code_challenge_method", True, "`S256`"),
            ("state", False, "returned unchanged"), ("scope", False, "a subset of the client's scopes; `openid` adds an ID token"),
            ("provider", False, "`google`, `facebook` or `dev`"), ("nonce", False, "copied into the ID token"),
            ("login_hint", False, "passed on to the provider")]],
        "responses": {"200": resp("The provider choice, or the dev provider's form", {"type": "string"}, "text/html"),
                      "302": resp("To the provider; or back to the client with `code`, `state` and `iss`, or with `error` (RFC 6749 §4.1.2.1)"),
                      "400": resp("An unknown client or a redirect URI it has not registered: a page, never a redirect", {"type": "string"}, "text/html")}}},
    "/oauth/authorize/dev": {"post": {"summary": "Dev mode only: the dev provider's form", "tags": ["oauth"],
        "requestBody": form({"login": s("the login in flight"), "name": s("who to sign in as")}, ["login", "name"]),
        "responses": {"302": resp("Back to the client with a code"), "400": resp("An unknown or finished login", {"type": "string"}, "text/html")}}},
    "/oauth/callback/{provider}": {
        "parameters": [{"name": "provider", "in": "path", "required": True, "schema": {"type": "string", "description": "`google`, `facebook`, `apple` or a `[[providers.oidc]]` name"}}],
        "get": {"summary": "Where the provider sends the person back (register `{public_url}/oauth/callback/{provider}` with each provider)", "tags": ["oauth"],
        "responses": {"302": resp("Back to the client with `code` and `state`, or with `error`"),
                      "400": resp("A tampered, replayed, expired or other browser's callback", {"type": "string"}, "text/html")}},
        "post": {"summary": "Sign in with Apple's answer (`response_mode=form_post`, provider `apple` only): a cross-site form POST, bound to the browser by the `__Secure-idbridge-login-apple` cookie", "tags": ["oauth"],
        "requestBody": form({"code": s("Apple's authorization code"), "state": s("the login in flight"), "id_token": s("Apple's ID token, with this sign-in's nonce"),
                             "user": s("first authorization only: JSON with the person's name"), "error": s("set when the person declined")}, ["state"]),
        "responses": {"302": resp("Back to the client with `code` and `state`, or with `error`"),
                      "400": resp("A tampered, replayed, expired or other browser's callback", {"type": "string"}, "text/html"),
                      "404": resp("Not Apple, or Apple not configured", {"type": "string"}, "text/html")}}},
    "/oauth/token": {"post": {"summary": "Token endpoint: token exchange (RFC 8693) of a provider assertion, refresh-token rotation, or an authorization code (with an `id_token` when `openid` is in scope)", "tags": ["oauth"],
        "security": [{}, {"basic": []}],
        "requestBody": form({
            "grant_type": s("`urn:ietf:params:oauth:grant-type:token-exchange`, `refresh_token` or `authorization_code`"),
            "code": s("authorization_code: the code (single use, 60 s)"),
            "redirect_uri": s("authorization_code: the redirect URI of the authorization request"),
            "code_verifier": s("authorization_code: the PKCE verifier"),
            **client_auth,
            "scope": s("space-separated, a subset of the client's scopes"),
            "subject_token": s("token exchange: the provider's ID token, or a Facebook user access token"),
            "subject_token_type": s("token exchange: `urn:ietf:params:oauth:token-type:id_token` (Google, Facebook Limited Login, dev; told apart by `iss`) or `urn:ietf:params:oauth:token-type:access_token` (with provider=facebook)"),
            "provider": s("token exchange: `google`, `facebook`, `apple`, a `[[providers.oidc]]` name or `dev`; required for access tokens"),
            "nonce": s("token exchange: the nonce from /oauth/nonce that the ID token carries"),
            "device_name": s("token exchange, optional, at most 100 characters"),
            "device_platform": s("token exchange, optional", enum=["ios", "android", "web", "desktop", "other"]),
            "display_name": s("token exchange with provider=apple, optional: the name the app got from Apple, kept for a new user only"),
            "authorization_code": s("token exchange with provider=apple, optional: the app's `authorizationCode`, redeemed at Apple; its refresh token is kept wrapped and revoked when the user is deleted"),
            "refresh_token": s("refresh: the refresh token; it is spent and a successor returned"),
        }, ["grant_type"]),
        "responses": dict({"200": resp("Tokens (`Cache-Control: no-store`); each sign-in makes a new device", token_response)}, **oauth_errors())}},
    "/oauth/nonce": {"post": {"summary": "A single-use sign-in nonce for the client (valid 600 s)", "tags": ["oauth"],
        "requestBody": form({"client_id": s("the public client")}, ["client_id"]),
        "responses": dict({"200": resp("Nonce", {"type": "object", "properties": {"nonce": {"type": "string"}, "expires_in": {"type": "integer"}}})}, **oauth_errors())}},
    "/oauth/revoke": {"post": {"summary": "Revocation (RFC 7009): a refresh or access token ends its whole device", "tags": ["oauth"],
        "security": [{}, {"basic": []}],
        "requestBody": form({"token": s("the token"), "token_type_hint": s("ignored: the token's shape tells its type"), **client_auth}, ["token"]),
        "responses": dict({"200": resp("Done, also for an unknown, malformed or foreign token")}, **oauth_errors())}},
    "/oauth/introspect": {"post": {"summary": "Introspection (RFC 7662), for confidential clients", "tags": ["oauth"],
        "security": [{"basic": []}],
        "requestBody": form({"token": s("the token"), "token_type_hint": s("ignored"), **client_auth}, ["token"]),
        "responses": dict({"200": resp("`{\"active\": false}` for anything not live", {"$ref": "#/components/schemas/Introspection"})}, **oauth_errors())}},
    "/oauth/userinfo": {
        m: {"summary": "UserInfo (OpenID Connect Core §5.3): `sub`; `name` with scope profile; `email` and `email_verified` with scope email. Needs scope openid", "tags": ["oauth"],
            "security": [{"bearer": []}, {"dpop": []}],
            "parameters": [{"name": "DPoP", "in": "header", "required": False, "schema": {"type": "string"}, "description": "a DPoP proof (RFC 9449) for a DPoP-bound token"}],
            "responses": {"200": resp("The user's claims (`Cache-Control: no-store`)", {"type": "object", "required": ["sub"], "properties": {"sub": {"type": "string"}, "name": {"type": "string"}, "email": {"type": "string"}, "email_verified": {"type": "boolean"}}}),
                          "401": resp("No, an invalid, or a DPoP-bound token without its proof (`WWW-Authenticate`)", {"$ref": "#/components/schemas/Problem"}, "application/problem+json"),
                          "403": resp("The token lacks scope openid", {"$ref": "#/components/schemas/Problem"}, "application/problem+json"),
                          "503": resp("The database cannot be reached", {"$ref": "#/components/schemas/Problem"}, "application/problem+json")}}
        for m in ("get", "post")},
    "/oauth/logout": {
        "get": {"summary": "RP-Initiated Logout 1.0: ends the device the ID token names and returns to the app (with `state`), or shows a page", "tags": ["oauth"],
                "parameters": [{"name": "id_token_hint", "in": "query", "required": False, "schema": {"type": "string"}, "description": "an ID token idbridge issued (expired or not): its device ends"},
                       {"name": "client_id", "in": "query", "required": False, "schema": {"type": "string"}},
                       {"name": "post_logout_redirect_uri", "in": "query", "required": False, "schema": {"type": "string"}, "description": "one of the client's post_logout_redirect_uris, exactly"},
                       {"name": "state", "in": "query", "required": False, "schema": {"type": "string"}}],
                "responses": {"302": resp("Back to post_logout_redirect_uri"), "200": resp("Signed out", {"type": "string"}, "text/html"),
                              "400": resp("A hint idbridge cannot check, or a return address that is not the client's", {"type": "string"}, "text/html"),
                              "503": resp("The database cannot be reached", {"type": "string"}, "text/html")}},
        "post": {"summary": "RP-Initiated Logout 1.0, as a form", "tags": ["oauth"],
                 "requestBody": form({"id_token_hint": s("an ID token idbridge issued"), "client_id": s("the client"), "post_logout_redirect_uri": s("one of the client's post_logout_redirect_uris"), "state": s("returned with the redirect")}, []),
                 "responses": {"302": resp("Back to post_logout_redirect_uri"), "200": resp("Signed out", {"type": "string"}, "text/html"),
                               "400": resp("A hint idbridge cannot check, or a return address that is not the client's", {"type": "string"}, "text/html"),
                               "503": resp("The database cannot be reached", {"type": "string"}, "text/html")}}},
    "/events/google": {"post": {"summary": "Google Cross-Account Protection (RISC): a Security Event Token (RFC 8417, pushed per RFC 8935) signed with the keys of `{google issuer}/.well-known/risc-configuration`; `aud` one of Google's client_ids, `iat` within the hour, `jti` single use. sessions-revoked, tokens-revoked and account-disabled end the identity's devices (hijacking also refuses its sign-in until account-enabled)", "tags": ["events"],
        "requestBody": {"required": True, "content": {"application/secevent+jwt": {"schema": {"type": "string"}}}},
        "responses": {"202": resp("Accepted (a replay too, without a new effect)"),
                      "400": resp("Refused; nothing changed", {"type": "object", "properties": {"err": {"type": "string"}, "description": {"type": "string"}}}),
                      "503": resp("Google's keys cannot be fetched; try again")}}},
    "/events/facebook/deauthorize": {"post": {"summary": "Facebook's Deauthorize Callback: `signed_request` (HMAC-SHA256 with the app secret); every device of that identity's user ends", "tags": ["events"],
        "requestBody": form({"signed_request": s("base64url(signature).base64url(payload)")}, ["signed_request"]),
        "responses": {"200": resp("Done (a replay too, without a new effect)"), "400": resp("Refused; nothing changed")}}},
    "/events/facebook/data-deletion": {"post": {"summary": "Facebook's Data Deletion Request Callback: the user is deleted when Facebook is their only identity, else the identity is unlinked and the devices end", "tags": ["events"],
        "requestBody": form({"signed_request": s("base64url(signature).base64url(payload)")}, ["signed_request"]),
        "responses": {"200": resp("Where the person sees the status", {"type": "object", "properties": {"url": {"type": "string"}, "confirmation_code": {"type": "string"}}}),
                      "400": resp("Refused; nothing changed")}}},
    "/events/facebook/data-deletion/{code}": {
        "parameters": [{"name": "code", "in": "path", "required": True, "schema": {"type": "string"}}],
        "get": {"summary": "A data-deletion request's status: HTML for a person, JSON with `Accept: application/json`", "tags": ["events"],
        "responses": {"200": resp("The status", {"type": "object", "properties": {"confirmation_code": {"type": "string"}, "status": {"type": "string"}, "outcome": {"type": "string"}, "requested_at": {"type": "integer"}}}),
                      "404": resp("No such request")}}},
    "/events/apple": {"post": {"summary": "Sign in with Apple's server-to-server notifications: `{\"payload\": JWT}` signed by Apple (`iss`, `aud` one of client_ids); consent-revoked ends the devices, account-delete deletes or unlinks, email-disabled/enabled are recorded", "tags": ["events"],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object", "properties": {"payload": {"type": "string"}}, "required": ["payload"]}}}},
        "responses": {"200": resp("Done (a replay too, without a new effect)"), "400": resp("Refused; nothing changed"), "503": resp("Apple's keys cannot be fetched; try again")}}},
    "/v1/me": {"get": {"summary": "The signed-in person (name and e-mail decrypted)", "tags": ["me"], "security": bearer,
        "responses": dict({"200": resp("Profile", {"$ref": "#/components/schemas/Me"}), "404": resp("The user no longer exists", problem, "application/problem+json")}, **v1_errors())},
      "delete": {"summary": "Delete the signed-in person: identities, devices, tokens and data keys (crypto-shredding)", "tags": ["me"], "security": bearer,
        "responses": dict({"204": resp("Deleted"), "404": resp("The user no longer exists", problem, "application/problem+json")}, **v1_errors())}},
    "/v1/me/devices": {"get": {"summary": "The person's live devices, newest first, paged", "tags": ["me"], "security": bearer,
        "parameters": [
            {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 50}},
            {"name": "cursor", "in": "query", "schema": {"type": "string"}, "description": "`next_cursor` of the previous page"}],
        "responses": dict({"200": resp("A page of devices", {"$ref": "#/components/schemas/Devices"}), "400": resp("Bad limit or cursor", problem, "application/problem+json")}, **v1_errors())}},
    "/v1/me/devices/{id}": {
        "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}],
        "delete": {"summary": "Revoke one of the person's devices", "tags": ["me"], "security": bearer,
        "responses": dict({"204": resp("Revoked"), "404": resp("Not a live device of the caller", problem, "application/problem+json")}, **v1_errors())}},
    "/v1/me/identities": {"post": {"summary": "Link another provider's identity, proven by a fresh assertion (never by e-mail)", "tags": ["me"], "security": bearer,
        "requestBody": form({
            "subject_token": s("the provider's assertion, as at token exchange"),
            "subject_token_type": s("`urn:ietf:params:oauth:token-type:id_token` or `urn:ietf:params:oauth:token-type:access_token` (with provider=facebook)"),
            "provider": s("optional for ID tokens: `google`, `facebook`, `apple`, a `[[providers.oidc]]` name, `dev`"),
            "nonce": s("the nonce from /oauth/nonce the ID token carries"),
            "authorization_code": s("provider=apple, optional: as at token exchange"),
        }, ["subject_token", "subject_token_type"]),
        "responses": dict({"201": resp("Linked", {"type": "object", "properties": {"provider": {"type": "string"}, "subject": {"type": "string"}}}),
                           "200": resp("Already this user's", {"type": "object"}),
                           "400": resp("The assertion is not acceptable", problem, "application/problem+json"),
                           "409": resp("The identity belongs to another user, or the user has one of this provider", problem, "application/problem+json")}, **v1_errors())}},
    "/v1/me/identities/{provider}": {
        "parameters": [{"name": "provider", "in": "path", "required": True, "schema": {"type": "string", "enum": ["google", "facebook", "dev"]}}],
        "delete": {"summary": "Remove the user's identity of a provider", "tags": ["me"], "security": bearer,
        "responses": dict({"204": resp("Removed"), "404": resp("No identity of this provider", problem, "application/problem+json"),
                           "409": resp("It is the last identity", problem, "application/problem+json")}, **v1_errors())}},
    "/v1/me/logout-all": {"post": {"summary": "Revoke every device of the person, this one too", "tags": ["me"], "security": bearer,
        "responses": dict({"204": resp("Done")}, **v1_errors())}},
    "/v1/crypto/encrypt": {"post": {"summary": "Encrypt under the user's newest data key", "tags": ["crypto"], "security": crypto_security,
        "requestBody": json_body({"plaintext": s("base64"), "context": s("optional; bound as associated data, needed again to decrypt"), "user_id": s("services only: the user")}, ["plaintext"]),
        "responses": dict({"200": resp("Ciphertext", {"type": "object", "properties": {"ciphertext": {"type": "string", "description": "idb1:v<version>:<base64url>"}, "key_version": {"type": "integer"}}})}, **crypto_errors())}},
    "/v1/crypto/decrypt": {"post": {"summary": "Decrypt one of the user's ciphertexts", "tags": ["crypto"], "security": crypto_security,
        "requestBody": json_body({"ciphertext": s("from encrypt or rewrap"), "context": s("the context it was made with"), "user_id": s("services only")}, ["ciphertext"]),
        "responses": dict({"200": resp("Plaintext", {"type": "object", "properties": {"plaintext": {"type": "string", "description": "base64"}}})}, **crypto_errors())}},
    "/v1/crypto/rewrap": {"post": {"summary": "Move a ciphertext to the user's newest key version, never returning plaintext", "tags": ["crypto"], "security": crypto_security,
        "requestBody": json_body({"ciphertext": s("the ciphertext"), "context": s("its context"), "user_id": s("services only")}, ["ciphertext"]),
        "responses": dict({"200": resp("Ciphertext", {"type": "object", "properties": {"ciphertext": {"type": "string"}, "key_version": {"type": "integer"}}})}, **crypto_errors())}},
    "/v1/crypto/rotate": {"post": {"summary": "A new key version for the user's new encryptions; older versions keep decrypting", "tags": ["crypto"], "security": crypto_security,
        "requestBody": {"required": False, "content": {"application/json": {"schema": {"type": "object", "properties": {"user_id": s("services only")}}}}},
        "responses": dict({"200": resp("The new version", {"type": "object", "properties": {"key_version": {"type": "integer"}}})}, **crypto_errors())}},
    "/dev/id-token": {"post": {"summary": "Dev mode only: an ID token of the dev provider for `name`", "tags": ["dev"],
        "requestBody": form({"name": s("1 to 64 characters; the token's subject"), "nonce": s("optional `nonce` claim")}, ["name"]),
        "responses": {"200": resp("`{\"id_token\": \"...\"}`", {"type": "object"}), "400": resp("Bad name", oauth_err)}}},
    **ADMIN_PATHS,
  },
  "components": {
    "securitySchemes": {
      "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT (RFC 9068, typ at+jwt)"},
      "dpop": {"type": "http", "scheme": "dpop", "description": "a DPoP-bound access token (RFC 9449 §7.1) with a DPoP proof header of the request"},
      "basic": {"type": "http", "scheme": "basic", "description": "confidential client: client_id and secret, form-urlencoded first (RFC 6749 §2.3.1)"}},
    "schemas": {
      "OAuthError": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}}},
      "Problem": {"type": "object", "properties": {"type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"}, "detail": {"type": "string"}}},
      "TokenResponse": {"type": "object", "required": ["access_token", "token_type", "expires_in", "refresh_token", "scope", "device_id"],
        "properties": {"access_token": {"type": "string"}, "issued_token_type": {"type": "string"}, "token_type": {"type": "string", "enum": ["Bearer", "DPoP"], "description": "DPoP when the request carried a DPoP proof (RFC 9449): the access token then has cnf.jkt"},
          "expires_in": {"type": "integer"}, "refresh_token": {"type": "string"}, "scope": {"type": "string"}, "device_id": {"type": "string", "format": "uuid"},
          "id_token": {"type": "string", "description": "authorization_code with openid in scope (OIDC Core §2, typ JWT)"}}},
      "Introspection": {"type": "object", "required": ["active"], "properties": {"active": {"type": "boolean"}, "sub": {"type": "string"}, "client_id": {"type": "string"},
          "sid": {"type": "string"}, "scope": {"type": "string"}, "exp": {"type": "integer"}, "iat": {"type": "integer"}, "iss": {"type": "string"},
          "aud": {"type": "string"}, "token_type": {"type": "string", "enum": ["Bearer", "DPoP", "refresh_token"]}, "idp": {"type": "string"},
          "cnf": {"type": "object", "properties": {"jkt": {"type": "string"}}, "description": "the DPoP key a bound token is held by"}}},
      "Me": {"type": "object", "properties": {"id": {"type": "string", "format": "uuid"}, "created_at": {"type": "string", "format": "date-time"},
          "display_name": {"type": ["string", "null"]}, "email": {"type": ["string", "null"]},
          "identities": {"type": "array", "items": {"type": "object", "properties": {"provider": {"type": "string"}, "subject": {"type": "string"},
              "linked_at": {"type": "string", "format": "date-time"}, "last_login_at": {"type": "string", "format": "date-time"}}}}}},
      "Devices": {"type": "object", "required": ["devices"], "properties": {
          "devices": {"type": "array", "items": {"type": "object", "properties": {"id": {"type": "string", "format": "uuid"}, "name": {"type": ["string", "null"]},
              "platform": {"type": ["string", "null"]}, "client_id": {"type": "string"}, "created_at": {"type": "string", "format": "date-time"},
              "last_seen_at": {"type": "string", "format": "date-time"}, "current": {"type": "boolean"}}}},
          "next_cursor": {"type": "string", "description": "present when there is another page"}}},
    }
  }
}
open(__import__('os').path.join(__import__('os').path.dirname(__file__), '..', 'openapi.json'), 'w').write(json.dumps(doc, indent=2) + "\n")
