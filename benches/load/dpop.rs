//! DPoP scenarios (RFC 9449), next to their Bearer twins: (i) refresh chains whose devices are
//! bound to a key, each refresh with a fresh proof; (j) `GET /v1/me` with a DPoP-bound token and
//! a fresh proof per request (compare with (h)). The client signs its proofs on the same two
//! cores, so these figures include one ES256 signature per request on the client's side.

use std::sync::Arc;
use std::time::Duration;

use super::dpop_key::DpopKey;
use super::fake_google::FakeGoogle;
use super::{drive, field, Report, Step, Target, TokenPool, ID_TOKEN_TYPE, TOKEN_EXCHANGE};

impl Target {
    /// A POST to `/oauth/token` with a proof by `key`.
    async fn token_with_proof(
        &self,
        key: &DpopKey,
        form: &[(&str, &str)],
    ) -> Result<serde_json::Value, String> {
        let url = format!("{}/oauth/token", self.base);
        let r = self.client.post(&url).header("DPoP", key.proof("POST", &url, None)).form(form).send().await;
        super::json_answer(r).await
    }

    async fn bound_sign_in(&self, key: &DpopKey, id_token: &str) -> Result<serde_json::Value, String> {
        let form = [
            ("grant_type", TOKEN_EXCHANGE),
            ("subject_token", id_token),
            ("subject_token_type", ID_TOKEN_TYPE),
            ("client_id", "app"),
        ];
        self.token_with_proof(key, &form).await
    }
}

/// (i) Each task signs in once with its own key, then refreshes its bound chain with proofs.
pub async fn refresh_chains(target: &Target, google: &FakeGoogle, conc: usize, window: Duration) -> Report {
    let spares =
        Arc::new(TokenPool { tokens: super::mint(google, conc * 3, None), next: Default::default() });
    let mut chains = Vec::new();
    for _ in 0..conc {
        let key = Arc::new(DpopKey::es256());
        let v = target.bound_sign_in(&key, spares.take().expect("spare")).await.expect("bound sign-in");
        chains.push((key, Some(field(&v, "refresh_token"))));
    }
    let t = target.clone();
    drive("(i) DPoP refresh chain", window, chains, move |(key, chain): (Arc<DpopKey>, Option<String>)| {
        let (t, spares) = (t.clone(), spares.clone());
        async move {
            let rt = match chain {
                Some(rt) => rt,
                None => match spares.take() {
                    None => return ((key, None), Step::Exhausted),
                    Some(tok) => match t.bound_sign_in(&key, tok).await {
                        Ok(v) => field(&v, "refresh_token"),
                        Err(_) => return ((key, None), Step::Err),
                    },
                },
            };
            let form =
                [("grant_type", "refresh_token"), ("refresh_token", rt.as_str()), ("client_id", "app")];
            match t.token_with_proof(&key, &form).await {
                Ok(v) => ((key, Some(field(&v, "refresh_token"))), Step::Ok),
                Err(_) => ((key, None), Step::Err),
            }
        }
    })
    .await
}

/// (j) `GET /v1/me` with one DPoP-bound access token, a fresh proof each request.
pub async fn me(target: &Target, google: &FakeGoogle, conc: usize, window: Duration) -> Report {
    let key = Arc::new(DpopKey::es256());
    let v = target.bound_sign_in(&key, &google.id_token(serde_json::json!({}))).await.expect("bound sign-in");
    let access = Arc::new(field(&v, "access_token"));
    let t = target.clone();
    drive("(j) GET /v1/me DPoP", window, vec![(); conc], move |()| {
        let (t, key, access) = (t.clone(), key.clone(), access.clone());
        async move {
            let url = format!("{}/v1/me", t.base);
            let res = t
                .client
                .get(&url)
                .header("Authorization", format!("DPoP {access}"))
                .header("DPoP", key.proof("GET", &url, Some(&access)))
                .send()
                .await;
            let ok = match res {
                Ok(r) if r.status() == 200 => r.bytes().await.is_ok(),
                _ => false,
            };
            ((), if ok { Step::Ok } else { Step::Err })
        }
    })
    .await
}
