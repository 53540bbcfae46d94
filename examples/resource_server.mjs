// Verify an idbridge access token offline, as a Node API server would (the `jose` package).
//
//     node resource_server.mjs ISSUER AUDIENCE REQUIRED_SCOPE TOKEN
//
// Prints the claims and exits 0 when valid with the scope; 1 for invalid (answer 401), 3 when
// the scope is missing (answer 403).
import { createRemoteJWKSet, jwtVerify } from "jose"; // npm install jose

const [issuer, audience, scope, token] = process.argv.slice(2);
// One JWKS set per process: cached, and refetched when a token names an unknown kid.
const jwks = createRemoteJWKSet(new URL(`${issuer}/.well-known/jwks.json`));
try {
  const { payload } = await jwtVerify(token, jwks, {
    issuer,
    audience,
    typ: "at+jwt", // RFC 9068: refuses ID tokens
    algorithms: ["ES256", "EdDSA", "RS256"],
    requiredClaims: ["exp", "iat", "sub"],
    clockTolerance: 30, // seconds, for clocks that differ
  });
  if (!String(payload.scope ?? "").split(" ").includes(scope)) {
    console.log(`403 insufficient_scope: needs ${scope}`);
    process.exit(3);
  }
  console.log(JSON.stringify(payload));
} catch (e) {
  console.log(`401 invalid_token: ${e.code ?? e.message}`);
  process.exit(1);
}
