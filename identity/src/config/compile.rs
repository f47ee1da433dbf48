//! The only bridge from the file to the [`Settings`]: each section of the file is checked and
//! compiled by its own function, and every problem is recorded through [`Problems::at`].

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::error::Problems;
use super::file::{ClientFile, EncryptionKeyFile, File, GrantType, KeysFile, UserFile};
use super::settings::{Client, ProcessSettings, Settings, User};
use super::LocatedErrors;
use crate::keys::kek::{self, MAKE_ONE};
use crate::keys::{KekSource, SigningAlg};
use crate::password;
use crate::state::StateUrl;

/// Claims the issuer sets itself; a user attribute may not shadow one of them.
const RESERVED_CLAIMS: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "exp",
    "nbf",
    "iat",
    "jti",
    "client_id",
    "scope",
    "auth_time",
    "nonce",
    "azp",
    "acr",
    "amr",
    "at_hash",
    "sid",
    "sub_kind",
    "roles",
    "email",
    "name",
    "typ",
    "cnf",
];

/// Checks `file` and builds the [`Settings`] the issuer reads. Every problem is reported, not
/// only the first; `path` is the file the messages name, `base` the directory relative paths
/// start from, `hash` the file's digest (see [`Settings::hash`]).
pub fn compile(
    mut file: File,
    path: &Path,
    base: &Path,
    hash: String,
) -> Result<Settings, LocatedErrors> {
    let mut problems = Problems::new(path);
    // The order of the checks is the order of the messages: keep it stable.
    check_listeners(&file, &mut problems);
    check_keys(&file.keys, &mut problems);
    check_sessions_and_limits(&file, &mut problems);
    let names = (
        file.users.iter().map(|u| u.username.clone()).collect(),
        file.clients.iter().map(|c| c.id.clone()).collect(),
    );
    let allowed_origins: Vec<Vec<String>> = file
        .clients
        .iter()
        .map(|c| c.allowed_origins.clone())
        .collect();
    let users = users(std::mem::take(&mut file.users), &mut problems);
    let clients = clients(
        std::mem::take(&mut file.clients),
        &file.keys.algorithms,
        &mut problems,
    );
    check_one_namespace(names, &mut problems);
    check_origins(&allowed_origins, &mut problems);
    let state = state_url(&file, base, &mut problems);
    let encryption_key = encryption_key(&file.keys, &state, base, &mut problems);
    problems.finish()?;
    let cors_origins = cors_origins(&allowed_origins);
    Ok(Settings {
        process: process(&file, base, state, encryption_key),
        tokens: file.tokens,
        session: file.session,
        lockout: file.lockout,
        max_body_bytes: file.max_body_bytes,
        timeouts: file.timeouts,
        users,
        clients,
        cors_origins,
        hash,
    })
}

/// `issuer`, `listen` and `admin`.
fn check_listeners(file: &File, problems: &mut Problems) {
    match url::Url::parse(&file.issuer) {
        Ok(u)
            if (u.scheme() == "https" || u.scheme() == "http")
                && u.query().is_none()
                && u.fragment().is_none() => {}
        _ => problems.at(
            "issuer",
            "must be an http(s) URL without query or fragment (OIDC Discovery §3)",
        ),
    }
    for (key, addr) in [("listen", &file.listen), ("admin", &file.admin)] {
        if addr.parse::<SocketAddr>().is_err() {
            problems.at(key, format!("{addr:?} is not an ip:port address"));
        }
    }
}

/// `state`, or its default: `state.db` beside `keys.dir` (`var/identity/` as shipped). Without
/// either there is no place to default to.
fn state_url(file: &File, base: &Path, problems: &mut Problems) -> StateUrl {
    let beside_keys = file.keys.dir.as_ref().map(|dir| {
        let keys_dir = base.join(dir);
        StateUrl::Sqlite(keys_dir.parent().unwrap_or(base).join("state.db"))
    });
    // Stands in for a missing or broken value; never used, since the file is then refused.
    let placeholder = || StateUrl::Sqlite(base.join("state.db"));
    match (&file.state, beside_keys) {
        (None, Some(default)) => default,
        (None, None) => {
            problems.at(
                "state",
                "is required without keys.dir: sqlite://PATH (one instance) or postgres://… (several)",
            );
            placeholder()
        }
        (Some(text), _) => StateUrl::parse(text, base).unwrap_or_else(|message| {
            problems.at("state", message);
            placeholder()
        }),
    }
}

/// `keys.encryption_key`, or its default: a `kek` file beside a SQLite database, made at the
/// first start. PostgreSQL has no default: every instance must use the same key, and it must
/// never be in the database it protects.
fn encryption_key(
    keys: &KeysFile,
    state: &StateUrl,
    base: &Path,
    problems: &mut Problems,
) -> KekSource {
    // Stands in for a broken value; never used, since the file is then refused.
    let placeholder = || KekSource::Env(String::new());
    match (&keys.encryption_key, state) {
        (
            Some(EncryptionKeyFile {
                file: Some(path),
                env: None,
            }),
            _,
        ) => KekSource::File(base.join(path)),
        (
            Some(EncryptionKeyFile {
                file: None,
                env: Some(name),
            }),
            _,
        ) => {
            if name.is_empty() || name.contains(['=', '\0']) {
                problems.at(
                    "keys.encryption_key.env",
                    "must name an environment variable",
                );
            }
            KekSource::Env(name.clone())
        }
        (Some(_), _) => {
            problems.at(
                "keys.encryption_key",
                format!("give exactly one of `file: PATH` or `env: NAME`, holding base64 of 32 random bytes ({MAKE_ONE})"),
            );
            placeholder()
        }
        (None, StateUrl::Sqlite(db)) => {
            let dir = db.parent().filter(|d| !d.as_os_str().is_empty());
            KekSource::Default(dir.unwrap_or(base).join(kek::DEFAULT_FILE))
        }
        (None, StateUrl::Postgres(_)) => {
            problems.at(
                "keys.encryption_key",
                format!("is required with a PostgreSQL state store: every instance must use the same key-encryption key, and it must never be in the database; give `file: PATH` or `env: NAME` holding base64 of 32 random bytes ({MAKE_ONE})"),
            );
            placeholder()
        }
    }
}

/// `keys`: at least one algorithm, none twice, and no rotation faster than a minute.
fn check_keys(keys: &KeysFile, problems: &mut Problems) {
    if keys.algorithms.is_empty() {
        problems.at(
            "keys.algorithms",
            "name at least one of RS256, ES256, EdDSA",
        );
    }
    let mut seen = BTreeSet::new();
    for alg in &keys.algorithms {
        if !seen.insert(*alg) {
            problems.at("keys.algorithms", format!("{alg:?} is listed twice"));
        }
    }
    if keys
        .rotate_every
        .is_some_and(|d| d < Duration::from_secs(60))
    {
        problems.at("keys.rotate_every", "must be at least 1m");
    }
}

/// `lockout`, `limits`, `max_body_bytes`, `timeouts` and `session` (the token lifetimes need no
/// check).
fn check_sessions_and_limits(file: &File, problems: &mut Problems) {
    if file.lockout.max_failures == 0 {
        problems.at("lockout.max_failures", "must be at least 1");
    }
    if file.lockout.ip_max_failures == 0 {
        problems.at("lockout.ip_max_failures", "must be at least 1");
    }
    if file.lockout.ip_window.is_zero() {
        problems.at("lockout.ip_window", "must be longer than 0s");
    }
    // Zero would refuse every password and client secret.
    if file.limits.hash_concurrency == Some(0) {
        problems.at("limits.hash_concurrency", "must be at least 1");
    }
    if file.max_body_bytes < 1024 {
        problems.at("max_body_bytes", "must be at least 1024");
    }
    // A zero deadline would refuse every request before its first byte.
    for name in file.timeouts.zero() {
        problems.at(format!("timeouts.{name}"), "must be longer than 0s");
    }
    let cookie = &file.session.cookie;
    if cookie.is_empty()
        || !cookie
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        problems.at("session.cookie", "must be letters, digits, '_' or '-'");
    }
}

/// The process settings, with relative paths resolved against `base`. Called once the file
/// is known to be valid.
fn process(
    file: &File,
    base: &Path,
    state: StateUrl,
    encryption_key: KekSource,
) -> ProcessSettings {
    // One check per core at once: more would only queue inside the blocking pool, holding
    // argon2's memory while they wait for a core.
    let hash_concurrency = file.limits.hash_concurrency.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    ProcessSettings {
        issuer: file.issuer.trim_end_matches('/').to_string(),
        listen: file.listen.clone(),
        tls: file
            .tls
            .as_ref()
            .map(|t| (base.join(&t.cert), base.join(&t.key))),
        admin: file.admin.clone(),
        state,
        keys_dir: file.keys.dir.as_ref().map(|dir| base.join(dir)),
        encryption_key,
        algorithms: file.keys.algorithms.clone(),
        rotate_every: file.keys.rotate_every,
        jwks_max_age: file.keys.jwks_max_age,
        // "-" is standard output, not a file named "-".
        audit_log: if file.audit_log == "-" {
            file.audit_log.clone()
        } else {
            base.join(&file.audit_log).display().to_string()
        },
        audit_rotation: file.audit_rotation,
        hash_concurrency,
        hash_queue: file.limits.hash_queue.unwrap_or(4 * hash_concurrency),
    }
}

/// User names and client ids are one namespace: both become a token's `sub`, and a resource
/// server (the gateway's owner checks, `/userinfo`) must never take a service for a user.
/// `names`: the user names and the client ids, in file order.
fn check_one_namespace(names: (Vec<String>, Vec<String>), problems: &mut Problems) {
    let (users, clients) = names;
    // Empty names are reported on their own.
    let users: HashMap<&str, usize> = users
        .iter()
        .enumerate()
        .filter(|(_, name)| !name.is_empty())
        .map(|(i, name)| (name.as_str(), i))
        .collect();
    for (i, id) in clients.iter().enumerate() {
        if let Some(j) = users.get(id.as_str()) {
            problems.at(
                format!("clients[{i}].id"),
                format!(
                    "`{id}` is also the username of users[{j}]; user names and client ids share one namespace (both become a token's `sub`), so rename one"
                ),
            );
        }
    }
}

/// Each `clients[i].allowed_origins[j]` must be an origin exactly as a browser sends it
/// (RFC 6454 §6.2): `scheme://host[:port]`, no path, no trailing slash.
fn check_origins(origins: &[Vec<String>], problems: &mut Problems) {
    for (i, list) in origins.iter().enumerate() {
        for (j, origin) in list.iter().enumerate() {
            let serialised = url::Url::parse(origin)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https"))
                .map(|u| u.origin().ascii_serialization());
            if serialised.as_deref() != Some(origin.as_str()) {
                problems.at(
                    format!("clients[{i}].allowed_origins[{j}]"),
                    format!(
                        "{origin:?} is not an origin: write scheme://host[:port], nothing after"
                    ),
                );
            }
        }
    }
}

fn cors_origins(origins: &[Vec<String>]) -> BTreeSet<String> {
    origins.iter().flatten().cloned().collect()
}

/// `users`, by username.
fn users(files: Vec<UserFile>, problems: &mut Problems) -> HashMap<String, Arc<User>> {
    let mut users = HashMap::new();
    for (i, u) in files.into_iter().enumerate() {
        let key = format!("users[{i}]");
        let user = user(&key, u, problems);
        if users
            .insert(user.username.clone(), Arc::new(user))
            .is_some()
        {
            problems.at(format!("{key}.username"), "is declared twice");
        }
    }
    users
}

/// One user, at key path `key`.
fn user(key: &str, u: UserFile, problems: &mut Problems) -> User {
    if u.username.is_empty() {
        problems.at(format!("{key}.username"), "must not be empty");
    }
    if let Err(e) = password::check_hash(&u.password_hash) {
        problems.at(format!("{key}.password_hash"), e);
    }
    for attr in u.attributes.keys() {
        if RESERVED_CLAIMS.contains(&attr.as_str()) {
            problems.at(
                format!("{key}.attributes.{attr}"),
                "is a claim the issuer sets itself; choose another name",
            );
        }
    }
    User {
        username: u.username,
        password_hash: u.password_hash,
        email: u.email,
        name: u.name,
        roles: u.roles,
        attributes: u.attributes,
    }
}

/// `clients`, by id. `algorithms` are the configured signing algorithms; a client without a
/// `signing_alg` gets the first.
fn clients(
    files: Vec<ClientFile>,
    algorithms: &[SigningAlg],
    problems: &mut Problems,
) -> HashMap<String, Arc<Client>> {
    let default_alg = algorithms.first().copied().unwrap_or(SigningAlg::RS256);
    let mut clients = HashMap::new();
    for (i, c) in files.into_iter().enumerate() {
        let key = format!("clients[{i}]");
        let client = client(&key, c, algorithms, default_alg, problems);
        if clients
            .insert(client.id.clone(), Arc::new(client))
            .is_some()
        {
            problems.at(format!("{key}.id"), "is declared twice");
        }
    }
    clients
}

/// One client, at key path `key`.
fn client(
    key: &str,
    c: ClientFile,
    algorithms: &[SigningAlg],
    default_alg: SigningAlg,
    problems: &mut Problems,
) -> Client {
    if c.id.is_empty() {
        problems.at(format!("{key}.id"), "must not be empty");
    }
    if let Some(h) = &c.secret_hash {
        if let Err(e) = password::check_hash(h) {
            problems.at(format!("{key}.secret_hash"), e);
        }
    }
    let grants = client_grants(key, &c, problems);
    check_client_uris(key, &c, problems);
    if grants.contains(&GrantType::ClientCredentials) && c.audiences.is_empty() {
        problems.at(
            format!("{key}.audiences"),
            "client_credentials needs at least one allowed audience",
        );
    }
    let alg = c.signing_alg.unwrap_or(default_alg);
    if !algorithms.contains(&alg) {
        problems.at(
            format!("{key}.signing_alg"),
            format!("{alg:?} is not in keys.algorithms"),
        );
    }
    for s in &c.scopes {
        if s.is_empty() || s.contains(' ') || s.contains('"') || s.contains('\\') {
            problems.at(
                format!("{key}.scopes"),
                format!("{s:?} is not a valid scope token (RFC 6749 §3.3)"),
            );
        }
    }
    Client {
        id: c.id,
        secret_hash: c.secret_hash,
        grant_types: grants,
        redirect_uris: c.redirect_uris,
        post_logout_redirect_uris: c.post_logout_redirect_uris,
        audiences: c.audiences,
        scopes: c.scopes.into_iter().collect(),
        roles: c.roles,
        signing_alg: alg,
        resource_server: c.resource_server,
    }
}

/// A client's grant types, and what each needs from the rest of its entry.
fn client_grants(key: &str, c: &ClientFile, problems: &mut Problems) -> BTreeSet<GrantType> {
    let grants: BTreeSet<GrantType> = c.grant_types.iter().copied().collect();
    if grants.is_empty() {
        problems.at(format!("{key}.grant_types"), "name at least one grant type");
    }
    if c.secret_hash.is_none() && grants.contains(&GrantType::ClientCredentials) {
        problems.at(
            format!("{key}.grant_types"),
            "client_credentials needs a secret_hash: a public client cannot prove who it is",
        );
    }
    if grants.contains(&GrantType::AuthorizationCode) && c.redirect_uris.is_empty() {
        problems.at(
            format!("{key}.redirect_uris"),
            "authorization_code needs at least one redirect URI",
        );
    }
    grants
}

/// Redirect and post-logout redirect URIs: absolute http(s), no fragment (RFC 6749 §3.1.2).
/// A post-logout URI is reported as `redirect_uris[n]`, numbered on after the redirect URIs:
/// that is the key path operators and tests already see.
fn check_client_uris(key: &str, c: &ClientFile, problems: &mut Problems) {
    for (j, uri) in c
        .redirect_uris
        .iter()
        .chain(&c.post_logout_redirect_uris)
        .enumerate()
    {
        match url::Url::parse(uri) {
            Ok(u) if u.fragment().is_none() && matches!(u.scheme(), "http" | "https") => {}
            _ => problems.at(
                format!("{key}.redirect_uris[{j}]"),
                format!(
                    "{uri:?} must be an absolute http(s) URL without fragment (RFC 6749 §3.1.2)"
                ),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    //! Every message and key path `compile` can produce, in order: operators and the gateway's
    //! `validate` read them, so a refactoring must leave them exactly as they are.

    use std::path::Path;

    use crate::config::{compile, load, File, LocatedErrors};

    /// A well-formed argon2id PHC string (the hash itself is never checked here).
    const PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzYWx0$YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY";
    const NOT_PHC: &str = "is not an argon2id PHC string (make one with `gatehouse-identity hash`)";

    fn problems(yaml: &str) -> Vec<(String, String)> {
        let file: File = serde_yaml::from_str(yaml).expect("test YAML has the right shape");
        match compile(
            file,
            Path::new("identity.yaml"),
            Path::new("/etc/gatehouse"),
            "h".into(),
        ) {
            Ok(_) => Vec::new(),
            Err(LocatedErrors(errors)) => {
                assert!(errors
                    .iter()
                    .all(|e| e.file == Path::new("identity.yaml") && e.line.is_none()));
                errors
                    .into_iter()
                    .map(|e| (e.key_path, e.message))
                    .collect()
            }
        }
    }

    fn expect(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, m)| (k.to_string(), m.to_string()))
            .collect()
    }

    #[test]
    fn every_problem_is_reported_with_its_key_path_in_file_order() {
        let yaml = format!(
            r#"
issuer: "ftp://idp.example/?q=1"
listen: nope
admin: "127.0.0.1:x"
keys: {{dir: keys, algorithms: [RS256, RS256], rotate_every: 10s}}
lockout: {{max_failures: 0}}
max_body_bytes: 10
session: {{cookie: "bad cookie"}}
users:
  - {{username: "", password_hash: nope, attributes: {{sub: x, team: y}}}}
  - {{username: "", password_hash: "{PHC}"}}
clients:
  - {{id: "", secret_hash: nope, grant_types: []}}
  - id: public
    grant_types: [client_credentials, authorization_code]
    post_logout_redirect_uris: ["http://rp.example/bye#frag", "/relative"]
    signing_alg: ES256
    scopes: [ok, "a b", "q\"", ""]
  - {{id: public, secret_hash: "{PHC}", grant_types: [password]}}
"#
        );
        let addr = |a: &str| format!("{a:?} is not an ip:port address");
        let uri = |u: &str| {
            format!("{u:?} must be an absolute http(s) URL without fragment (RFC 6749 §3.1.2)")
        };
        let scope = |s: &str| format!("{s:?} is not a valid scope token (RFC 6749 §3.3)");
        let (listen, admin) = (addr("nope"), addr("127.0.0.1:x"));
        let (uri0, uri1) = (uri("http://rp.example/bye#frag"), uri("/relative"));
        let (scope1, scope2, scope3) = (scope("a b"), scope("q\""), scope(""));
        assert_eq!(
            problems(&yaml),
            expect(&[
                ("issuer", "must be an http(s) URL without query or fragment (OIDC Discovery §3)"),
                ("listen", &listen),
                ("admin", &admin),
                ("keys.algorithms", "RS256 is listed twice"),
                ("keys.rotate_every", "must be at least 1m"),
                ("lockout.max_failures", "must be at least 1"),
                ("max_body_bytes", "must be at least 1024"),
                ("session.cookie", "must be letters, digits, '_' or '-'"),
                ("users[0].username", "must not be empty"),
                ("users[0].password_hash", NOT_PHC),
                ("users[0].attributes.sub", "is a claim the issuer sets itself; choose another name"),
                ("users[1].username", "must not be empty"),
                ("users[1].username", "is declared twice"),
                ("clients[0].id", "must not be empty"),
                ("clients[0].secret_hash", NOT_PHC),
                ("clients[0].grant_types", "name at least one grant type"),
                ("clients[1].grant_types", "client_credentials needs a secret_hash: a public client cannot prove who it is"),
                ("clients[1].redirect_uris", "authorization_code needs at least one redirect URI"),
                ("clients[1].redirect_uris[0]", &uri0),
                ("clients[1].redirect_uris[1]", &uri1),
                ("clients[1].audiences", "client_credentials needs at least one allowed audience"),
                ("clients[1].signing_alg", "ES256 is not in keys.algorithms"),
                ("clients[1].scopes", &scope1),
                ("clients[1].scopes", &scope2),
                ("clients[1].scopes", &scope3),
                ("clients[2].id", "is declared twice"),
            ])
        );
    }

    #[test]
    fn no_algorithm_and_an_unreadable_file_are_reported() {
        let yaml = "issuer: https://idp.example\nlisten: 127.0.0.1:1\nadmin: 127.0.0.1:2\nkeys: {dir: k, algorithms: []}\n";
        assert_eq!(
            problems(yaml),
            expect(&[(
                "keys.algorithms",
                "name at least one of RS256, ES256, EdDSA"
            )])
        );

        let missing = Path::new("/nonexistent/identity.yaml");
        let Err(LocatedErrors(errors)) = load(missing) else {
            panic!("a missing file loads");
        };
        assert_eq!(errors.len(), 1);
        // A whole-file problem: no key path (it used to be the pseudo-key "(file)").
        assert_eq!(
            (errors[0].file.as_path(), errors[0].key_path.as_str()),
            (missing, "")
        );
        assert!(
            errors[0].message.starts_with("cannot read: "),
            "{}",
            errors[0].message
        );
        assert!(LocatedErrors(errors)
            .to_string()
            .starts_with("/nonexistent/identity.yaml: cannot read: "));
    }

    #[test]
    fn a_file_that_does_not_parse_is_located_by_its_line() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("identity.yaml");
        let yaml = "issuer: https://idp.example\nlisten: 127.0.0.1:1\nadmin: 127.0.0.1:2\nkeys: {dir: k}\nclients:\n  - id: a\n    grant_types: [client_credentials]\n    colour: blue\n";
        std::fs::write(&path, yaml).expect("write");
        let Err(LocatedErrors(errors)) = load(&path) else {
            panic!("an unknown key loads");
        };
        assert_eq!(errors.len(), 1);
        let e = &errors[0];
        assert_eq!((e.line, e.key_path.as_str()), (Some(8), ""));
        // serde_yaml's key path stays at the head of the message; its " at line 8 column 5"
        // became the location.
        assert!(
            e.message.starts_with("clients[0]: unknown field `colour`"),
            "{}",
            e.message
        );
        assert!(!e.message.contains("at line"), "{}", e.message);
        assert!(e
            .to_string()
            .starts_with(&format!("{}:8: clients[0]: unknown field", path.display())));
    }

    #[test]
    fn request_deadlines_are_read_and_must_not_be_zero() {
        let base = "issuer: https://idp.example\nlisten: 127.0.0.1:1\nadmin: 127.0.0.1:2\nkeys: {dir: k}\n";
        let file: File =
            serde_yaml::from_str(&format!("{base}timeouts: {{header: 2s, body: 3s}}\n"))
                .expect("test YAML has the right shape");
        let settings = compile(file, Path::new("identity.yaml"), Path::new("/"), "h".into())
            .expect("a valid file");
        assert_eq!(settings.timeouts.header, std::time::Duration::from_secs(2));
        assert_eq!(settings.timeouts.body, std::time::Duration::from_secs(3));
        assert_eq!(
            problems(&format!("{base}timeouts: {{header: 0s, body: 0s}}\n")),
            expect(&[
                ("timeouts.header", "must be longer than 0s"),
                ("timeouts.body", "must be longer than 0s"),
            ])
        );
    }

    #[test]
    fn hash_limits_default_to_the_cores_and_lockout_budgets_must_not_be_zero() {
        let base = "issuer: https://idp.example\nlisten: 127.0.0.1:1\nadmin: 127.0.0.1:2\nkeys: {dir: k}\n";
        let compiled = |yaml: &str| {
            let file: File = serde_yaml::from_str(yaml).expect("test YAML has the right shape");
            compile(file, Path::new("identity.yaml"), Path::new("/"), "h".into())
                .expect("a valid file")
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let defaults = compiled(base);
        let p = &defaults.process;
        assert_eq!((p.hash_concurrency, p.hash_queue), (cores, 4 * cores));
        let lockout = &defaults.lockout;
        assert_eq!(
            (lockout.ip_max_failures, lockout.ip_window),
            (100, std::time::Duration::from_secs(600))
        );
        let set = compiled(&format!(
            "{base}limits: {{hash_concurrency: 3, hash_queue: 0}}\n"
        ));
        assert_eq!(
            (set.process.hash_concurrency, set.process.hash_queue),
            (3, 0)
        );
        assert_eq!(
            problems(&format!(
                "{base}limits: {{hash_concurrency: 0}}\nlockout: {{ip_max_failures: 0, ip_window: 0s}}\n"
            )),
            expect(&[
                ("lockout.ip_max_failures", "must be at least 1"),
                ("lockout.ip_window", "must be longer than 0s"),
                ("limits.hash_concurrency", "must be at least 1"),
            ])
        );
    }

    #[test]
    fn the_key_encryption_key_is_one_source_and_required_with_postgres() {
        use crate::keys::KekSource;
        let base = "issuer: https://idp.example\nlisten: 127.0.0.1:1\nadmin: 127.0.0.1:2\n";
        let compiled = |yaml: &str| {
            let file: File = serde_yaml::from_str(yaml).expect("test YAML has the right shape");
            compile(
                file,
                Path::new("identity.yaml"),
                Path::new("/etc/gh"),
                "h".into(),
            )
            .expect("a valid file")
            .process
        };
        // SQLite without a key: the default file beside the database.
        let p = compiled(&format!(
            "{base}state: sqlite://../var/state.db\nkeys: {{}}\n"
        ));
        assert_eq!(
            p.encryption_key,
            KekSource::Default("/etc/gh/../var/kek".into())
        );
        assert_eq!(p.keys_dir, None);
        let p = compiled(&format!("{base}keys: {{dir: ../var/keys}}\n"));
        assert_eq!(
            p.encryption_key,
            KekSource::Default("/etc/gh/../var/kek".into())
        );
        let p = compiled(&format!(
            "{base}state: postgres://db.example/idp\nkeys: {{encryption_key: {{file: secrets/kek}}}}\n"
        ));
        assert_eq!(
            p.encryption_key,
            KekSource::File("/etc/gh/secrets/kek".into())
        );
        let p = compiled(&format!(
            "{base}state: postgres://db.example/idp\nkeys: {{encryption_key: {{env: IDP_KEK}}}}\n"
        ));
        assert_eq!(p.encryption_key, KekSource::Env("IDP_KEK".into()));

        let one_of = "give exactly one of `file: PATH` or `env: NAME`, holding base64 of 32 random bytes (make one with `head -c 32 /dev/urandom | base64`)";
        let required = "is required with a PostgreSQL state store: every instance must use the same key-encryption key, and it must never be in the database; give `file: PATH` or `env: NAME` holding base64 of 32 random bytes (make one with `head -c 32 /dev/urandom | base64`)";
        assert_eq!(
            problems(&format!(
                "{base}state: postgres://db.example/idp\nkeys: {{dir: k}}\n"
            )),
            expect(&[("keys.encryption_key", required)])
        );
        assert_eq!(
            problems(&format!(
                "{base}keys: {{dir: k, encryption_key: {{file: a, env: B}}}}\n"
            )),
            expect(&[("keys.encryption_key", one_of)])
        );
        assert_eq!(
            problems(&format!("{base}keys: {{dir: k, encryption_key: {{}}}}\n")),
            expect(&[("keys.encryption_key", one_of)])
        );
        assert_eq!(
            problems(&format!(
                "{base}keys: {{dir: k, encryption_key: {{env: \"\"}}}}\n"
            )),
            expect(&[(
                "keys.encryption_key.env",
                "must name an environment variable"
            )])
        );
        assert_eq!(
            problems(&format!("{base}keys: {{}}\n")),
            expect(&[(
                "state",
                "is required without keys.dir: sqlite://PATH (one instance) or postgres://… (several)"
            )])
        );
    }

    #[test]
    fn a_valid_file_compiles_with_paths_resolved_against_its_directory() {
        let yaml = "issuer: https://idp.example/\nlisten: 127.0.0.1:1\nadmin: 127.0.0.1:2\nkeys: {dir: k}\naudit_log: audit.log\n";
        let file: File = serde_yaml::from_str(yaml).expect("test YAML has the right shape");
        let settings = compile(
            file,
            Path::new("identity.yaml"),
            Path::new("/etc/gatehouse"),
            "h".into(),
        )
        .expect("a valid file");
        let p = &settings.process;
        assert_eq!(p.issuer, "https://idp.example");
        assert_eq!(p.keys_dir.as_deref(), Some(Path::new("/etc/gatehouse/k")));
        assert_eq!(p.audit_log, "/etc/gatehouse/audit.log");
    }
}
