//! The use cases without HTTP, on a real SQLite database: what each caller (API, console,
//! command line) now gets the same way.

use std::sync::Arc;

use diesel::prelude::*;

use super::*;
use crate::accounts::{self, Keys};
use crate::crypto::blind_index::BlindIndex;
use crate::crypto::keyring::MasterKeyring;
use crate::crypto::server_secrets::ServerSecret;
use crate::crypto::user_keys::UserKeys;
use crate::db::schema::{audit_events, devices as device_rows, revocations};
use crate::db::Db;
use crate::ids::{DeviceId, UserId};
use crate::providers::{ProviderKind, VerifiedAssertion};
use crate::sessions::{self, Liveness, SignIn, SignedIn};
use crate::tokens::nonce::NonceKey;

struct World {
    _dir: tempfile::TempDir,
    db: Db,
    user_keys: Arc<UserKeys>,
    liveness: Arc<Liveness>,
    policy: sessions::Policy,
}

async fn world() -> World {
    let dir = tempfile::tempdir().expect("a temp dir");
    let db = Db::new(&format!("sqlite://{}/t.db", dir.path().display()), 2).expect("database url");
    db.migrate().expect("migrations");
    let liveness = Arc::new(Liveness::default());
    liveness.follow(db.subscribers());
    let user_keys = Arc::new(UserKeys::new(Arc::new(MasterKeyring::from_keys(vec![[7; 32]]))));
    let policy = sessions::Policy {
        idle_ttl_secs: 3_600,
        max_ttl_secs: 86_400,
        reuse_grace_secs: 10,
        max_devices_per_user: 10,
    };
    World { _dir: dir, db, user_keys, liveness, policy }
}

impl World {
    /// A sign-in of `subject` through the general path: the user is made on the first.
    async fn sign_in(&self, subject: &str) -> SignedIn {
        let (user_keys, policy) = (self.user_keys.clone(), self.policy.clone());
        let request = SignIn {
            assertion: VerifiedAssertion {
                provider: ProviderKind::Dev,
                subject: subject.to_string(),
                email: None,
                email_verified: None,
                name: None,
                nonce: None,
                assertion_hash: None,
                expires_at: crate::clock::now() + 600,
                audience: None,
                upstream: None,
            },
            nonce: None,
            client_id: "app".into(),
            scope: "openid".into(),
            device_name: None,
            device_platform: None,
            origin: Default::default(),
            dpop_jkt: None,
        };
        self.db
            .write(move |conn| {
                let (nonces, blind) = (
                    NonceKey(ServerSecret::from_bytes([1; 32])),
                    BlindIndex(ServerSecret::from_bytes([2; 32])),
                );
                let keys = Keys { nonces: &nonces, user_keys: &user_keys, blind_index: &blind };
                let now = crate::clock::now();
                let user_id =
                    accounts::admit(conn, &keys, &request.assertion, None, &request.client_id, now)?;
                Ok::<_, accounts::SignInError>(sessions::devices::open(
                    conn, &user_id, &request, &policy, now,
                )?)
            })
            .await
            .expect("sign-in")
    }

    /// `(actor, action, detail)` of every audit event, oldest first.
    async fn audit(&self) -> Vec<(String, String, Option<String>)> {
        self.db
            .run(|conn| {
                audit_events::table
                    .order(audit_events::id.asc())
                    .select((audit_events::actor, audit_events::action, audit_events::detail))
                    .load(conn)
                    .map_err(crate::db::DbError::from)
            })
            .await
            .expect("audit")
    }

    async fn revoked(&self, device_id: &str) -> bool {
        let id = device_id.to_string();
        let revoked_at: Option<i64> = self
            .db
            .run(move |conn| {
                device_rows::table
                    .find(id)
                    .select(device_rows::revoked_at)
                    .first(conn)
                    .map_err(crate::db::DbError::from)
            })
            .await
            .expect("device");
        revoked_at.is_some()
    }
}

fn user(signed: &SignedIn) -> UserId {
    UserId::trusted(signed.user_id.clone())
}

#[tokio::test]
async fn a_disable_ends_every_device_everywhere_with_one_audit_event() {
    let w = world().await;
    let (a, b) = (w.sign_in("s1").await, w.sign_in("s1").await);
    let ended = users::disable(&w.db, &user(&a), &Requester::cli(), None).await.expect("disable");
    assert_eq!(ended, super::StateChange::Done(2));
    for device in [&a.device.id, &b.device.id] {
        assert!(w.revoked(device).await);
        assert!(w.liveness.is_revoked(device), "this replica refuses its tokens at once");
    }
    let mut events = w.audit().await;
    let before_again = events.len();
    let last = events.pop().expect("an event");
    assert_eq!(last, ("cli".into(), "user.disable".into(), Some("devices=2".into())));
    let unknown = UserId::parse("0192f5e4-7c1a-7d2e-9b1f-3a4c5d6e7f80").expect("uuid");
    assert_eq!(
        users::disable(&w.db, &unknown, &Requester::cli(), None).await.expect("disable"),
        super::StateChange::Missing
    );
    let again = users::disable(&w.db, &user(&a), &Requester::cli(), None).await.expect("disable");
    assert_eq!(again, super::StateChange::AlreadySo);
    assert_eq!(w.audit().await.len(), before_again, "disabling twice audits once");
}

#[tokio::test]
async fn the_command_lines_signing_key_rotation_is_audited() {
    let w = world().await;
    let keyring = Arc::new(MasterKeyring::from_keys(vec![[9; 32]]));
    let keys = Arc::new(crate::crypto::signing::SigningKeys::new(
        keyring,
        crate::config::SigningAlg::EdDSA,
        600,
        86_400,
    ));
    let kid = keys::rotate_signing(&w.db, &keys, &Requester::cli()).await.expect("rotate");
    let last = w.audit().await.pop().expect("an event");
    assert_eq!(last, ("cli".into(), "signing_key.rotate".into(), Some(format!("kid={kid}"))));
}

#[tokio::test]
async fn the_admin_role_is_audited_whoever_grants_it() {
    let w = world().await;
    let signed = w.sign_in("s2").await;
    assert!(users::set_admin(&w.db, &user(&signed), true, &Requester::cli()).await.expect("grant"));
    assert!(users::set_admin(&w.db, &user(&signed), false, &Requester::cli()).await.expect("revoke"));
    let actions: Vec<String> = w.audit().await.into_iter().map(|(_, action, _)| action).collect();
    assert_eq!(actions[actions.len() - 2..], ["admin.grant".to_string(), "admin.revoke".to_string()]);
}

#[tokio::test]
async fn a_deleted_user_is_gone_with_their_devices_refused_at_once() {
    let w = world().await;
    let signed = w.sign_in("s3").await;
    let by = Requester::new(crate::audit::Actor::User(signed.user_id.clone()), Default::default());
    assert!(users::delete(&w.db, &w.user_keys, &user(&signed), &by).await.expect("delete"));
    assert!(w.liveness.is_revoked(&signed.device.id));
    let rows: i64 =
        w.db.run(|conn| revocations::table.count().get_result(conn).map_err(crate::db::DbError::from))
            .await
            .expect("count");
    assert_eq!(rows, 1, "the revocation outlives the deleted device row");
    assert!(!users::delete(&w.db, &w.user_keys, &user(&signed), &by).await.expect("delete again"));
}

#[tokio::test]
async fn a_device_ends_only_for_its_owner() {
    let w = world().await;
    let (mine, theirs) = (w.sign_in("s4").await, w.sign_in("s5").await);
    let device = DeviceId::trusted(theirs.device.id.clone());
    let by = Requester::cli();
    let action = crate::audit::AuditAction::DeviceRevoke;
    let not_mine = devices::Owner::LiveOfUser(user(&mine));
    assert_eq!(devices::end(&w.db, &device, &not_mine, &by, action, None).await.expect("end"), None);
    assert!(!w.revoked(&theirs.device.id).await);
    let theirs_owner = devices::Owner::LiveOfUser(user(&theirs));
    assert_eq!(
        devices::end(&w.db, &device, &theirs_owner, &by, action, None).await.expect("end"),
        Some(true)
    );
    assert!(w.revoked(&theirs.device.id).await && w.liveness.is_revoked(&theirs.device.id));
}

#[tokio::test]
async fn deleting_a_console_client_ends_its_devices() {
    let w = world().await;
    let settings = crate::config::Settings::from_toml_str(
        "[server]\npublic_url = \"http://127.0.0.1:8080/\"\n[database]\nurl = \"sqlite://x.db\"\n[keys]\nmaster_keys = [\"env:K\"]\n",
        std::iter::empty(),
    )
    .expect("settings");
    let registry = Arc::new(crate::clients::ClientRegistry::from_settings(&settings).expect("registry"));
    let new = crate::clients::NewClient {
        client_id: "app".into(),
        kind: crate::clients::ClientKind::Public,
        redirect_uris: vec!["https://app.example/cb".into()],
        scopes: vec!["openid".into()],
        backchannel_logout_uri: None,
        dpop_required: false,
    };
    let by = Requester::new(crate::audit::Actor::Admin("a".into()), Default::default());
    clients::create(&w.db, &registry, new, &by).await.expect("create").expect("made");
    let signed = w.sign_in("s6").await;
    let deleted =
        clients::change(&w.db, &registry, "app", clients::Change::Delete, &by).await.expect("delete");
    assert_eq!(deleted, super::StateChange::Done(()));
    assert!(w.revoked(&signed.device.id).await && w.liveness.is_revoked(&signed.device.id));
    let actions: Vec<String> = w.audit().await.into_iter().map(|(_, action, _)| action).collect();
    assert_eq!(actions[actions.len() - 2..], ["device.revoke".to_string(), "client.delete".to_string()]);
}
