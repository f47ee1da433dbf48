//! Identity state that outlives the process and is shared between instances (issue #13), on
//! SQLite (the default) and on a real PostgreSQL started for the test: a restart keeps SSO
//! sessions, refresh-token families, revocations and account locks; two issuers on one database
//! behave as one; a database outage refuses what needs it (503, nothing issued) and heals on its
//! own.

mod support;

use serde_json::Value;
use support::browser_flow::*;
use support::postgres::Postgres;
use support::*;

/// Locks after two failures, long enough to outlast the test.
const LOCKOUT: &str = "lockout:\n  max_failures: 2\n  base_delay: 10m\n  max_delay: 10m\n";

/// An issuer on SQLite (`None`, the default file) or on the PostgreSQL database `state`, where
/// every instance shares one key-encryption key.
fn issuer_on(state: Option<&str>) -> Identity {
    match state {
        Some(url) => {
            let mut id = Identity::prepare_on_state(LOCKOUT, &standard_directory(), url, 1);
            id.spawn();
            id
        }
        None => Identity::start(LOCKOUT, &standard_directory()),
    }
}

/// `POST /token` as the `cli` client, grant password.
async fn password_grant(id: &Identity, username: &str, password: &str) -> reqwest::Response {
    client()
        .post(id.url("/token"))
        .basic_auth("cli", Some("cli-secret"))
        .form(&[
            ("grant_type", "password"),
            ("username", username),
            ("password", password),
        ])
        .send()
        .await
        .expect("password grant")
}

async fn introspect_as_reports(id: &Identity, token: &str) -> Value {
    introspect_as(id, ("reports", "reports-secret"), token).await
}

/// A client introspects only its own tokens.
async fn introspect_as(id: &Identity, (client_id, secret): (&str, &str), token: &str) -> Value {
    ok_json(
        client()
            .post(id.url("/introspect"))
            .basic_auth(client_id, Some(secret))
            .form(&[("token", token)])
            .send()
            .await
            .expect("introspect"),
    )
    .await
}

async fn revoke_as_reports(id: &Identity, token: &str) {
    let resp = client()
        .post(id.url("/revoke"))
        .basic_auth("reports", Some("reports-secret"))
        .form(&[("token", token)])
        .send()
        .await
        .expect("revoke");
    assert_eq!(resp.status().as_u16(), 200);
}

/// Two wrong passwords lock bob; then even the right one is refused with a Retry-After.
async fn lock_bob(id: &Identity) {
    for _ in 0..2 {
        oauth_error(
            password_grant(id, "bob", "wrong").await,
            400,
            "invalid_grant",
        )
        .await;
    }
    assert_locked(id).await;
}

async fn assert_locked(id: &Identity) {
    let resp = password_grant(id, "bob", "bob-password").await;
    assert!(resp.headers().contains_key("retry-after"), "bob is locked");
    oauth_error(resp, 400, "invalid_grant").await;
}

/// The `/authorize` answer for a browser that already has a session: straight back with a code.
async fn sso_code(id: &Identity, browser: &reqwest::Client) -> String {
    let url = authorize_url(
        id,
        &[
            ("response_type", "code"),
            ("client_id", "web"),
            ("redirect_uri", WEB_CALLBACK),
            ("scope", "openid documents:read"),
            ("state", "st"),
        ],
    );
    let resp = get(browser, &url).await;
    assert_eq!(
        resp.status().as_u16(),
        303,
        "a live session answers at once"
    );
    query(&location(&resp))["code"].clone()
}

async fn service_access_token(id: &Identity) -> String {
    let body = ok_json(id.service_token("reports", "reports-secret", &[]).await).await;
    s(&body, "access_token").to_string()
}

/// The restart scenario on whichever store `state` names.
async fn a_restart_keeps_everything(state: Option<&str>) {
    let mut id = issuer_on(state);
    // No kept-alive connections: they would point at the process the test stops.
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .pool_max_idle_per_host(0)
        .build()
        .expect("browser");
    let tokens = web_tokens(&id, &browser).await;
    let refresh = s(&tokens, "refresh_token").to_string();
    let revoked = service_access_token(&id).await;
    revoke_as_reports(&id, &revoked).await;
    assert_eq!(introspect_as_reports(&id, &revoked).await["active"], false);
    lock_bob(&id).await;

    id.stop();
    id.spawn();

    // The SSO session: no login form.
    let code = sso_code(&id, &browser).await;
    ok_json(redeem_web(&id, &code, WEB_CALLBACK, None).await).await;
    // The refresh family: the token rotates, and the old one is now a replay.
    let rotated = ok_json(refresh_web(&id, &refresh).await).await;
    assert!(rotated["refresh_token"].is_string());
    oauth_error(refresh_web(&id, &refresh).await, 400, "invalid_grant").await;
    // The revocation: still revoked (it used to come back to life).
    assert_eq!(
        introspect_as_reports(&id, &revoked).await["active"],
        false,
        "a revoked token stays revoked across a restart"
    );
    // The lock.
    assert_locked(&id).await;
}

#[tokio::test]
async fn a_restart_on_sqlite_keeps_sessions_families_revocations_and_locks() {
    a_restart_keeps_everything(None).await;
}

#[tokio::test]
async fn a_restart_on_postgres_keeps_sessions_families_revocations_and_locks() {
    let pg = Postgres::start();
    let url = pg.create_database("identity");
    a_restart_keeps_everything(Some(&url)).await;
}

#[tokio::test]
async fn two_instances_on_one_postgres_behave_as_one_issuer() {
    let pg = Postgres::start();
    let url = pg.create_database("shared");
    let a = issuer_on(Some(&url));
    let b = issuer_on(Some(&url));
    let browser = browser();

    // Log in on A; B knows the session (the cookie is the browser's, for 127.0.0.1).
    let tokens = web_tokens(&a, &browser).await;
    let code = sso_code(&b, &browser).await;
    // A code made on B cannot be redeemed on A twice: once on A, then a replay on B fails.
    ok_json(redeem_web(&a, &code, WEB_CALLBACK, None).await).await;
    oauth_error(
        redeem_web(&b, &code, WEB_CALLBACK, None).await,
        400,
        "invalid_grant",
    )
    .await;

    // Refresh on A, replay on B: detected, and the family (A's new token too) is revoked.
    let refresh = s(&tokens, "refresh_token").to_string();
    let rotated = ok_json(refresh_web(&a, &refresh).await).await;
    oauth_error(refresh_web(&b, &refresh).await, 400, "invalid_grant").await;
    let next = s(&rotated, "refresh_token");
    oauth_error(refresh_web(&a, next).await, 400, "invalid_grant").await;

    // A lockout on A holds on B.
    lock_bob(&a).await;
    assert_locked(&b).await;

    // One code redeemed on both at once: exactly one token.
    for _ in 0..3 {
        let code = sso_code(&a, &browser).await;
        let (on_a, on_b) = tokio::join!(
            redeem_web(&a, &code, WEB_CALLBACK, None),
            redeem_web(&b, &code, WEB_CALLBACK, None)
        );
        let ok = [on_a.status().as_u16(), on_b.status().as_u16()];
        assert_eq!(
            ok.iter().filter(|s| **s == 200).count(),
            1,
            "exactly one redemption wins: {ok:?}"
        );
        assert!(ok.contains(&400), "the other is refused: {ok:?}");
    }
}

#[tokio::test]
async fn a_database_outage_refuses_what_needs_it_issues_nothing_and_heals() {
    let mut pg = Postgres::start();
    let url = pg.create_database("outage");
    let id = issuer_on(Some(&url));
    let browser = browser();
    let tokens = web_tokens(&id, &browser).await;
    let refresh = s(&tokens, "refresh_token").to_string();
    let ready = |id: &Identity| {
        let url = id.admin("/readyz");
        async move {
            client()
                .get(url)
                .send()
                .await
                .expect("readyz")
                .status()
                .as_u16()
        }
    };
    assert_eq!(ready(&id).await, 200);

    pg.stop();
    let resp = refresh_web(&id, &refresh).await;
    assert_eq!(
        resp.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    let body = oauth_error(resp, 503, "temporarily_unavailable").await;
    assert!(body.get("refresh_token").is_none());
    oauth_error(
        password_grant(&id, "alice", "alice-password").await,
        503,
        "temporarily_unavailable",
    )
    .await;
    oauth_error(
        id.service_token("reports", "reports-secret", &[]).await,
        503,
        "temporarily_unavailable",
    )
    .await;
    let page = get(&browser, &id.url("/authorize?response_type=code&client_id=web&redirect_uri=http%3A%2F%2F127.0.0.1%3A1%2Fcallback&state=s")).await;
    assert_eq!(
        page.status().as_u16(),
        503,
        "the login cannot start without the store"
    );
    assert_eq!(ready(&id).await, 503);
    let metrics = id.metrics().await;
    assert_eq!(metric_value(&metrics, "gatehouse_identity_store_up"), 0.0);
    // The first thing a token request needs is the client's lockout state.
    assert!(metrics.contains("gatehouse_identity_store_errors_total{operation=\"lockout\"}"));
    assert!(id.stderr().contains("identity state store unavailable"));

    pg.start_again();
    // No restart of the issuer: it heals on the next use.
    eventually("the issuer is ready again", READY_TIMEOUT, || async {
        ready(&id).await == 200
    })
    .await;
    let rotated = ok_json(refresh_web(&id, &refresh).await).await;
    assert!(
        rotated["access_token"].is_string(),
        "the refresh token refused during the outage still works"
    );
    assert_eq!(
        metric_value(&id.metrics().await, "gatehouse_identity_store_up"),
        1.0
    );
}

#[tokio::test]
async fn a_store_failure_mid_rotation_leaves_the_refresh_token_usable() {
    let pg = Postgres::start();
    let url = pg.create_database("rotation_fault");
    let id = issuer_on(Some(&url));
    let browser = browser();
    let tokens = web_tokens(&id, &browser).await;
    let refresh = s(&tokens, "refresh_token").to_string();

    // The fault: storing the new refresh token fails, after the old one was marked used and
    // the new access token recorded in the same transaction.
    pg.psql(
        &url,
        "CREATE FUNCTION injected_fault() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'injected fault'; END $$; \
         CREATE TRIGGER fault BEFORE INSERT ON refresh_tokens \
         FOR EACH ROW EXECUTE FUNCTION injected_fault()",
    )
    .expect("install the fault");
    let body = oauth_error(
        refresh_web(&id, &refresh).await,
        503,
        "temporarily_unavailable",
    )
    .await;
    assert!(body.get("refresh_token").is_none());
    pg.psql(&url, "DROP TRIGGER fault ON refresh_tokens")
        .expect("remove the fault");

    // The client retries with the same token: it was never spent, so this is no replay.
    let rotated = ok_json(refresh_web(&id, &refresh).await).await;
    let next = s(&rotated, "refresh_token");
    assert_ne!(next, refresh);
    ok_json(refresh_web(&id, next).await).await;
    assert_eq!(
        introspect_as(&id, ("web", "web-secret"), s(&tokens, "access_token")).await["active"],
        true,
        "the family lives"
    );
    assert!(!id.audit_text().contains("refresh_token_reuse"));
}

#[tokio::test]
async fn a_store_failure_mid_code_exchange_leaves_the_code_redeemable() {
    let pg = Postgres::start();
    let url = pg.create_database("code_fault");
    let id = issuer_on(Some(&url));
    let browser = browser();
    let (verifier, challenge) = pkce();
    let code = web_code(&id, &browser, Some(&challenge)).await;

    // The fault: storing the family's first refresh token fails, after the code was redeemed
    // and the family started with the access token.
    pg.psql(
        &url,
        "CREATE FUNCTION injected_fault() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'injected fault'; END $$; \
         CREATE TRIGGER fault BEFORE INSERT ON refresh_tokens \
         FOR EACH ROW EXECUTE FUNCTION injected_fault()",
    )
    .expect("install the fault");
    let body = oauth_error(
        redeem_web(&id, &code, WEB_CALLBACK, Some(&verifier)).await,
        503,
        "temporarily_unavailable",
    )
    .await;
    assert!(body.get("access_token").is_none());
    assert_eq!(
        family_rows(&pg, &url),
        "0|0",
        "the failed exchange left no family"
    );
    pg.psql(&url, "DROP TRIGGER fault ON refresh_tokens")
        .expect("remove the fault");

    // The client retries with the same code: it was never spent, so this is no replay
    // (RFC 6749 §4.1.2 would revoke everything issued from it).
    let tokens = ok_json(redeem_web(&id, &code, WEB_CALLBACK, Some(&verifier)).await).await;
    let web = ("web", "web-secret");
    assert_eq!(
        introspect_as(&id, web, s(&tokens, "access_token")).await["active"],
        true
    );
    let refreshed = ok_json(refresh_web(&id, s(&tokens, "refresh_token")).await).await;
    assert_eq!(
        introspect_as(&id, web, s(&tokens, "access_token")).await["active"],
        true,
        "the family lives"
    );
    assert_eq!(
        introspect_as(&id, web, s(&refreshed, "access_token")).await["active"],
        true
    );
    assert!(!id.audit_text().contains("code_reuse"));
    // Still single use: a third redemption is a replay, and revokes the family.
    oauth_error(
        redeem_web(&id, &code, WEB_CALLBACK, Some(&verifier)).await,
        400,
        "invalid_grant",
    )
    .await;
    assert_eq!(
        introspect_as(&id, web, s(&refreshed, "access_token")).await["active"],
        false
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_everywhere_during_a_code_exchange_revokes_what_the_exchange_issued() {
    let pg = Postgres::start();
    let url = pg.create_database("code_race");
    let id = issuer_on(Some(&url));
    let browser = browser();
    // The client's secret is verified (and cached) once before: the exchange below is quick.
    web_tokens(&id, &browser).await;
    let (verifier, challenge) = pkce();
    let code = web_code(&id, &browser, Some(&challenge)).await;

    // A slow write: the exchange, having won the code and passed every check, waits a second
    // when it starts the family, in its still open transaction.
    pg.psql(
        &url,
        "CREATE FUNCTION slow_write() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN PERFORM pg_sleep(1); RETURN NEW; END $$; \
         CREATE TRIGGER slow BEFORE INSERT ON families \
         FOR EACH ROW EXECUTE FUNCTION slow_write()",
    )
    .expect("install the slow write");
    // The logout everywhere comes exactly then. (Were it not to wait for the exchange, its scan
    // of alice's families would miss the one still uncommitted, and that family's refresh token
    // would outlive the logout.)
    let logout = async {
        let sleeping = "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'";
        let mut polls = 0;
        while tokio::task::block_in_place(|| pg.psql(&url, sleeping)).expect("poll") != "1" {
            polls += 1;
            assert!(polls < 500, "the exchange never reached the slow write");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        client()
            .post(id.admin("/users/alice/logout"))
            .send()
            .await
            .expect("logout everywhere")
    };
    let (exchange, logout) = tokio::join!(
        redeem_web(&id, &code, WEB_CALLBACK, Some(&verifier)),
        logout
    );
    assert_eq!(logout.status().as_u16(), 200);
    pg.psql(&url, "DROP TRIGGER slow ON families")
        .expect("remove the slow write");

    // The exchange won, and committed after the logout had begun: what it issued is revoked all
    // the same (the logout waited for it).
    let tokens = ok_json(exchange).await;
    oauth_error(
        refresh_web(&id, s(&tokens, "refresh_token")).await,
        400,
        "invalid_grant",
    )
    .await;
    assert_eq!(
        introspect_as(&id, ("web", "web-secret"), s(&tokens, "access_token")).await["active"],
        false
    );
}

#[tokio::test]
async fn a_store_failure_mid_password_grant_leaves_no_family() {
    let pg = Postgres::start();
    let url = pg.create_database("password_fault");
    let id = issuer_on(Some(&url));
    pg.psql(
        &url,
        "CREATE FUNCTION injected_fault() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'injected fault'; END $$; \
         CREATE TRIGGER fault BEFORE INSERT ON refresh_tokens \
         FOR EACH ROW EXECUTE FUNCTION injected_fault()",
    )
    .expect("install the fault");
    oauth_error(
        password_grant(&id, "alice", "alice-password").await,
        503,
        "temporarily_unavailable",
    )
    .await;
    // The family, its access token and its first refresh token are one transaction.
    assert_eq!(family_rows(&pg, &url), "0|0");
    pg.psql(&url, "DROP TRIGGER fault ON refresh_tokens")
        .expect("remove the fault");
    let tokens = ok_json(password_grant(&id, "alice", "alice-password").await).await;
    assert_eq!(family_rows(&pg, &url), "1|1");
    ok_json(
        refresh_as(
            &id,
            ("cli", "cli-secret"),
            s(&tokens, "refresh_token"),
            None,
        )
        .await,
    )
    .await;
}

/// How many families and recorded access tokens the database holds: `families|access`.
fn family_rows(pg: &Postgres, url: &str) -> String {
    pg.psql(
        url,
        "SELECT (SELECT count(*) FROM families) || '|' || (SELECT count(*) FROM family_access)",
    )
    .expect("count the families")
}

/// `gatehouse-identity users <action> <name>`: the admin commands from the command line.
fn users_cli(id: &Identity, action: &str, name: &str) -> (bool, String, String) {
    let out = std::process::Command::new(BIN)
        .arg("--config")
        .arg(id.config_path())
        .args(["users", action, name])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run the users command");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_users_command_logs_out_disables_and_enables_through_the_admin_listener() {
    let id = issuer_on(None);
    let token = ok_json(password_grant(&id, "alice", "alice-password").await).await;
    let access = s(&token, "access_token").to_string();
    let cli = ("cli", "cli-secret");
    assert_eq!(introspect_as(&id, cli, &access).await["active"], true);

    let (ok, stdout, _) = users_cli(&id, "logout", "alice");
    assert!(ok, "{stdout}");
    let answer: Value = serde_json::from_str(stdout.trim()).expect("JSON answer");
    assert_eq!(answer["subject"], "alice");
    assert_eq!(introspect_as(&id, cli, &access).await["active"], false);

    assert!(users_cli(&id, "disable", "alice").0);
    oauth_error(
        password_grant(&id, "alice", "alice-password").await,
        400,
        "invalid_grant",
    )
    .await;
    assert!(users_cli(&id, "enable", "alice").0);
    ok_json(password_grant(&id, "alice", "alice-password").await).await;

    // An unknown user: a 404 from the issuer, exit status 1, and the reason on stderr.
    let (ok, stdout, stderr) = users_cli(&id, "disable", "mallory");
    assert!(!ok);
    assert!(stdout.contains("no such user"), "{stdout}");
    assert!(stderr.contains("404"), "{stderr}");
    let audit = id.audit_text();
    assert!(audit.contains("\"logout_everywhere\"") && audit.contains("\"user_disabled\""));
}
