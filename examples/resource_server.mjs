// Verify an idbridge access token offline, as a Node API server would (the `jose` package).
//
//     node resource_server.mjs ISSUER AUDIENCE REQUIRED_SCOPE TOKEN [DPOP_PROOF METHOD URL]
//
// Prints the claims and exits 0 when valid with the scope; 1 for invalid (answer 401), 3 when
// the scope is missing (answer 403).
//
// A DPoP-bound token (its `cnf.jkt`, RFC 9449) arrives as `Authorization: DPoP <token>` with a
// `DPoP` proof header: pass the proof and the request's method and URL. The proof must be by
// the token's key and for this request; a bound token without one is refused. A server also
// remembers each proof's `jti` for 5 minutes and refuses it again (`seenJtis` below).
import { createHash } from "node:crypto";
import { calculateJwkThumbprint, createRemoteJWKSet, EmbeddedJWK, jwtVerify } from "jose"; // npm install jose

const PROOF_MAX_AGE = 300;
const seenJtis = new Map(); // `${jkt} ${jti}` -> expiry; in a server, shared by its requests

const withoutQuery = (url) => {
  const u = new URL(url);
  return `${u.protocol}//${u.host}${u.pathname}`;
};

// RFC 9449 §7: a bound token needs a proof of this request by its key.
async function verifyDpop(payload, token, proof, method, url) {
  const jkt = payload.cnf?.jkt;
  if (!jkt) throw new Error("the token is not DPoP-bound");
  const { payload: p, protectedHeader } = await jwtVerify(proof, EmbeddedJWK, {
    typ: "dpop+jwt",
    algorithms: ["ES256", "EdDSA"],
  });
  if ((await calculateJwkThumbprint(protectedHeader.jwk, "sha256")) !== jkt) {
    throw new Error("the proof is not by the token's key");
  }
  if (p.htm !== method || withoutQuery(p.htu) !== withoutQuery(url)) {
    throw new Error("the proof is for another request");
  }
  const now = Math.floor(Date.now() / 1000);
  if (!(p.iat >= now - PROOF_MAX_AGE && p.iat <= now + 5)) throw new Error("the proof is stale");
  if (p.ath !== createHash("sha256").update(token).digest("base64url")) {
    throw new Error("the proof is for another token");
  }
  const seen = `${jkt} ${p.jti}`;
  if (!p.jti || (seenJtis.get(seen) ?? 0) > now) throw new Error("the proof was used before");
  seenJtis.set(seen, now + PROOF_MAX_AGE + 5);
}

const [issuer, audience, scope, token, proof, method, url] = process.argv.slice(2);
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
  if (proof !== undefined) {
    await verifyDpop(payload, token, proof, method, url);
  } else if (payload.cnf) {
    throw new Error("a DPoP-bound token needs a DPoP proof");
  }
  if (!String(payload.scope ?? "").split(" ").includes(scope)) {
    console.log(`403 insufficient_scope: needs ${scope}`);
    process.exit(3);
  }
  console.log(JSON.stringify(payload));
} catch (e) {
  console.log(`401 invalid_token: ${e.code ?? e.message}`);
  process.exit(1);
}
