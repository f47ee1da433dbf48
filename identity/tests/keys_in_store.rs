//! Signing keys kept in the state store: several issuer processes sharing one PostgreSQL
//! database and one key-encryption key publish the same keys, verify each other's tokens and
//! see each other's rotations; a process given another key-encryption key refuses to start; a
//! store that goes away leaves the keys held in memory in use; an issuer upgraded from key
//! files keeps its kids. (Restarts with SQLite: `service_tokens`, key persistence.)

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::postgres::Postgres;
use support::{client, eventually, kek_text, standard_directory, Identity};

/// Both instances must name the same issuer: a token's `iss` is checked on introspection.
const ISSUER: &str = "https://idp.example";

/// How long the brief gives another instance to show a rotation (the tick is 1 s).
const SEEN_WITHIN: Duration = Duration::from_secs(2);

/// An issuer on `state` whose key-encryption key is `kek` × 32; not started yet.
fn prepare(state: &str, kek: u8) -> Identity {
    Identity::prepare_on_state(
        &format!("issuer: {ISSUER}"),
        &standard_directory(),
        state,
        kek,
    )
}

fn start(state: &str, kek: u8) -> Identity {
    let mut identity = prepare(state, kek);
    identity.spawn();
    identity
}

async fn get_json(url: &str) -> Value {
    let resp = client().get(url).send().await.expect("GET");
    assert_eq!(resp.status(), 200, "GET {url}");
    resp.json().await.expect("JSON")
}

async fn jwks(identity: &Identity) -> Value {
    get_json(&identity.url("/jwks.json")).await
}

fn kids(jwks: &Value) -> Vec<String> {
    let mut kids: Vec<String> = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["kid"].as_str().expect("kid").to_string())
        .collect();
    kids.sort();
    kids
}

async fn service_token(identity: &Identity) -> String {
    let resp = identity
        .service_token("reports", "reports-secret", &[])
        .await;
    assert_eq!(resp.status(), 200, "token");
    let body: Value = resp.json().await.expect("token JSON");
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}

async fn introspect(identity: &Identity, token: &str) -> Value {
    let resp = client()
        .post(identity.url("/introspect"))
        .basic_auth("reports", Some("reports-secret"))
        .form(&[("token", token)])
        .send()
        .await
        .expect("introspect");
    assert_eq!(resp.status(), 200, "introspect");
    resp.json().await.expect("introspection JSON")
}

/// `POST /keys/rotate` (staged): status and answer.
async fn rotate(identity: &Identity) -> (u16, Value) {
    let resp = client()
        .post(identity.admin("/keys/rotate"))
        .send()
        .await
        .expect("rotate");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The kids of a rotation's changes, and whether each was created by it.
fn changes(rotation: &Value) -> Vec<(String, bool)> {
    rotation["rotated"]
        .as_array()
        .unwrap_or_else(|| panic!("rotated list in {rotation}"))
        .iter()
        .map(|c| {
            (
                c["kid"].as_str().expect("kid").to_string(),
                c["created"].as_bool().expect("created"),
            )
        })
        .collect()
}

/// Waits for the process to exit (it must), and returns its stderr.
fn exit_output(identity: &mut Identity) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    while identity.exit_status().is_none() {
        assert!(
            Instant::now() < deadline,
            "still running:\n{}",
            identity.stderr()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    identity.stderr()
}

#[tokio::test]
async fn two_issuers_on_one_postgres_share_their_keys_and_see_each_others_rotations() {
    // Given two issuer processes on one PostgreSQL database with the same key-encryption key,
    let pg = Postgres::start();
    let url = pg.create_database("keys");
    let a = start(&url, 7);
    let b = start(&url, 7);

    // they publish the same keys (the second found the first's and generated none),
    let jwks_a = jwks(&a).await;
    assert_eq!(kids(&jwks_a).len(), 2, "{jwks_a}");
    assert_eq!(jwks(&b).await, jwks_a);

    // and a token A issued introspects active on B.
    let token = service_token(&a).await;
    let answer = introspect(&b, &token).await;
    assert_eq!(answer["active"], true, "{answer}");
    assert_eq!(answer["client_id"], "reports", "{answer}");

    // When the operator rotates on A,
    let (status, rotation) = rotate(&a).await;
    assert_eq!(status, 200, "{rotation}");
    let published = changes(&rotation);
    assert!(published.iter().all(|(_, created)| *created), "{rotation}");

    // B publishes the next keys within two seconds, and its JWKS is A's again.
    let started = Instant::now();
    let b_ref = &b;
    let next: Vec<String> = published.iter().map(|(kid, _)| kid.clone()).collect();
    let wanted = next.clone();
    eventually("B to publish A's next keys", SEEN_WITHIN, move || {
        let wanted = wanted.clone();
        async move {
            let kids = kids(&jwks(b_ref).await);
            wanted.iter().all(|kid| kids.contains(kid))
        }
    })
    .await;
    eprintln!("B saw the rotation after {:?}", started.elapsed());
    assert_eq!(jwks(&b).await, jwks(&a).await);

    // A rotation on B now finds those next keys waiting and publishes none of its own.
    let (status, again) = rotate(&b).await;
    assert_eq!(status, 200, "{again}");
    let mut expected: Vec<(String, bool)> = next.iter().map(|k| (k.clone(), false)).collect();
    let mut reported = changes(&again);
    expected.sort();
    reported.sort();
    assert_eq!(reported, expected);
    assert_eq!(kids(&jwks(&a).await).len(), 4);

    // An issuer given another key-encryption key refuses to start, saying why and where.
    let mut c = prepare(&url, 8);
    c.launch();
    let stderr = exit_output(&mut c);
    assert!(
        stderr.contains("keys.encryption_key.file: the key-encryption key does not open the signing keys in the store"),
        "{stderr}"
    );
    assert!(!stderr.contains(&kek_text(8)), "the key is never shown");
    assert_eq!(jwks(&a).await, jwks(&b).await);

    // The key-encryption key never reaches a log.
    for id in [&a, &b] {
        let logs = format!("{}{}", id.stderr(), id.audit_text());
        assert!(!logs.contains(&kek_text(7)), "KEK in the logs");
    }
}

#[tokio::test]
async fn the_keys_held_in_memory_stay_in_use_while_the_store_is_away() {
    // Given two issuers sharing a PostgreSQL store,
    let mut pg = Postgres::start();
    let url = pg.create_database("away");
    let a = start(&url, 7);
    let b = start(&url, 7);
    let before = jwks(&a).await;

    // when the database goes away for a few ticks,
    pg.stop();
    tokio::time::sleep(Duration::from_millis(3500)).await;

    // both go on publishing their keys; the failure is logged once, not every second;
    assert_eq!(jwks(&a).await, before);
    assert_eq!(jwks(&b).await, before);
    let failures = a
        .stderr()
        .matches("reading the signing keys failed")
        .count();
    assert_eq!(failures, 1, "{}", a.stderr());
    // a rotation asked for meanwhile answers 503 and changes nothing.
    let (status, answer) = rotate(&a).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(jwks(&a).await, before);

    // Once it is back, key upkeep resumes: a rotation on A reaches B.
    pg.start_again();
    let a_ref = &a;
    let mut published = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while published.is_empty() {
        assert!(Instant::now() < deadline, "rotation never succeeded");
        match rotate(a_ref).await {
            (200, rotation) => published = changes(&rotation),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let b_ref = &b;
    eventually("B to publish the rotation", SEEN_WITHIN * 3, move || {
        let wanted: Vec<String> = published.iter().map(|(k, _)| k.clone()).collect();
        async move {
            let kids = kids(&jwks(b_ref).await);
            wanted.iter().all(|kid| kids.contains(kid))
        }
    })
    .await;
    // The recovery is logged by A's own key reader on its next tick (up to a second after the
    // rotation above went through), not by the rotation.
    eventually(
        "A to log that its keys are readable again",
        SEEN_WITHIN,
        || async {
            a_ref
                .stderr()
                .contains("signing keys readable in the state store again")
        },
    )
    .await;
}

#[tokio::test]
async fn an_issuer_upgraded_from_key_files_keeps_its_kids() {
    // Given the key files an earlier version kept in keys.dir, with a token signed by one,
    let mut identity = Identity::prepare("", &standard_directory());
    let ring = gatehouse_identity::keys::KeyRing::open(
        &identity.path("keys"),
        &[
            gatehouse_identity::keys::SigningAlg::RS256,
            gatehouse_identity::keys::SigningAlg::ES256,
        ],
        1,
    )
    .expect("file-kept keys");
    let mut old_kids = ring.current().kids();
    old_kids.sort();
    drop(ring);

    // when this version starts on them (SQLite state, nothing else configured),
    identity.spawn();

    // it publishes the same kids, says it imported them, and leaves the files in place.
    assert_eq!(kids(&jwks(&identity).await), old_kids);
    let stderr = identity.stderr();
    assert!(
        stderr.contains("imported the signing keys kept as files into the state store"),
        "{stderr}"
    );
    assert!(identity.path("keys/keyring.json").exists());

    // A restart reads them from the store, not the files: a rotation in between stays.
    let (status, rotation) = rotate(&identity).await;
    assert_eq!(status, 200, "{rotation}");
    let after = kids(&jwks(&identity).await);
    assert_eq!(after.len(), 4);
    identity.stop();
    identity.spawn();
    assert_eq!(kids(&jwks(&identity).await), after);
    // (stderr is the restarted process's own)
    assert!(!identity.stderr().contains("imported the signing keys"));
}
