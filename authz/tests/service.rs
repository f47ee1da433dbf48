//! The policy decision service end to end: a real `gatehouse-authz` process per test, asked over
//! HTTP the way the gateway and applications ask it.

mod support;

use std::collections::HashSet;

use serde_json::{json, Value};
use support::{
    ask, client, error_json, eventually, invalid, line_of, night, office_hours, ok_json, Authz,
    DERIVED_ROLES, DOCUMENTS, READY_TIMEOUT, STANDARD_POLICIES, WORKING_HOURS,
};

const AUTHORIZE: &str = "/authz/v1/authorize";
const BATCH: &str = "/authz/v1/authorize/batch";
const RELOAD_OK: &str = r#"gatehouse_authz_policy_reloads_total{result="success"}"#;
const RELOAD_FAILED: &str = r#"gatehouse_authz_policy_reloads_total{result="failure"}"#;

/// `DOCUMENTS`, revised: viewers may read too.
fn documents_v2() -> String {
    DOCUMENTS
        .replace("\"2026-11-23\"", "\"2026-12-01\"")
        .replace("roles: [editor, admin]", "roles: [editor, admin, viewer]")
}

/// The deciding parts of an answer (everything but its id and explanation).
fn verdict(d: &Value) -> Value {
    json!({
        "allow": d["allow"],
        "reason": d["reason"],
        "policy_id": d["policy_id"],
        "policy_version": d["policy_version"],
        "rule": d["rule"],
    })
}

fn decision_id(d: &Value) -> String {
    let id = d["decision_id"].as_str().unwrap_or_default().to_string();
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "decision id {id:?}"
    );
    id
}

#[tokio::test]
async fn allow_and_deny_answers_name_the_deciding_policy_rule_and_version() {
    let authz = Authz::standard();
    let mut ids = HashSet::new();

    let d = authz
        .authorize(&ask("bob", &["editor"], "view", office_hours()))
        .await;
    assert_eq!(
        verdict(&d),
        json!({
            "allow": true,
            "reason": r#"allowed by rule "editors-and-owners-view" of policy "documents""#,
            "policy_id": "documents",
            "policy_version": "2026-11-23",
            "rule": "editors-and-owners-view",
        })
    );
    assert!(d.get("explanation").is_none(), "{d}");
    assert!(ids.insert(decision_id(&d)));

    // The owner holds the derived role `owner`, which the edit rule names.
    let d = authz
        .authorize(&ask("alice", &[], "edit", office_hours()))
        .await;
    assert_eq!(d["allow"], true, "{d}");
    assert_eq!(d["rule"], "owner-or-admin-edits");
    assert!(ids.insert(decision_id(&d)));

    // Nothing allows an editor to edit someone else's document: a deny naming no policy.
    let d = authz
        .authorize(&ask("bob", &["editor"], "edit", office_hours()))
        .await;
    assert_eq!(
        verdict(&d),
        json!({
            "allow": false,
            "reason": r#"no rule allows "edit" on "document" for this principal"#,
            "policy_id": null,
            "policy_version": null,
            "rule": null,
        })
    );
    assert!(ids.insert(decision_id(&d)));

    // Deny overrides allow across files: documents.yaml allows the owner, working_hours.yaml
    // denies at night outside the office, and the deny wins.
    let d = authz.authorize(&ask("alice", &[], "view", night())).await;
    assert_eq!(
        verdict(&d),
        json!({
            "allow": false,
            "reason": r#"denied by rule "outside-hours-outside-office" of policy "working-hours""#,
            "policy_id": "working-hours",
            "policy_version": "2026-11-23",
            "rule": "outside-hours-outside-office",
        })
    );
    assert!(ids.insert(decision_id(&d)));
    let d = authz
        .authorize(&ask("root", &["admin"], "delete", night()))
        .await;
    assert_eq!(d["allow"], false, "{d}");
    assert_eq!(d["policy_id"], "working-hours");
    assert!(ids.insert(decision_id(&d)));
    // From the office network the night rule does not apply.
    let d = authz
        .authorize(&ask(
            "alice",
            &[],
            "view",
            json!({"ip": "10.2.3.4", "time": "2026-11-23T23:00:00+01:00"}),
        ))
        .await;
    assert_eq!(d["allow"], true, "{d}");
    assert_eq!(d["policy_id"], "documents");
    assert!(ids.insert(decision_id(&d)));
    // Without an IP the night rule cannot be checked: it fails closed and says why.
    let d = authz
        .authorize(&ask(
            "alice",
            &[],
            "view",
            json!({"time": "2026-11-23T23:00:00+01:00"}),
        ))
        .await;
    assert_eq!(d["allow"], false, "{d}");
    assert_eq!(d["rule"], "outside-hours-outside-office");
    let reason = d["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with(
            r#"denied by rule "outside-hours-outside-office" of policy "working-hours": its condition could not be evaluated"#
        ),
        "{reason}"
    );
    assert!(ids.insert(decision_id(&d)));

    // No policy covers the type.
    let d = authz
        .authorize(&json!({
            "principal": {"sub": "root", "roles": ["admin"]},
            "resource": {"type": "invoice", "id": "i1"},
            "action": "view",
        }))
        .await;
    assert_eq!(
        verdict(&d),
        json!({
            "allow": false,
            "reason": r#"no policy covers resource type "invoice""#,
            "policy_id": null,
            "policy_version": null,
            "rule": null,
        })
    );
    assert!(ids.insert(decision_id(&d)));
    assert_eq!(ids.len(), 8);
}

#[tokio::test]
async fn explain_traces_rules_conditions_and_derived_roles() {
    let authz = Authz::standard();
    let set_version = authz.policies().await["version"].clone();

    // The owner, in office hours, from outside the office.
    let d = ok_json(
        authz
            .post(
                &format!("{AUTHORIZE}?explain=true"),
                &ask("alice", &[], "view", office_hours()),
            )
            .await,
    )
    .await;
    assert_eq!(d["allow"], true, "{d}");
    let e = &d["explanation"];
    assert_eq!(e["policy_set"], set_version);
    assert_eq!(
        e["rules"],
        json!([
            {
                "policy_id": "working-hours",
                "policy_version": "2026-11-23",
                "rule": "outside-hours-outside-office",
                "effect": "deny",
                "matched": false,
                "outcome": "condition false",
                "role": "*",
                "condition": {
                    "expression": "none",
                    "result": false,
                    "of": [
                        {
                            "expression": r#"ipInRange(context.ip, ["10.0.0.0/8", "192.168.0.0/16"])"#,
                            "result": false
                        },
                        {
                            "expression": r#"isWeekday(context.time, "Europe/Paris") && timeBetween(context.time, "08:00", "19:00", "Europe/Paris")"#,
                            "result": true
                        }
                    ]
                }
            },
            {
                "policy_id": "documents",
                "policy_version": "2026-11-23",
                "rule": "editors-and-owners-view",
                "effect": "allow",
                "matched": true,
                "outcome": "applies",
                "role": "derived:owner"
            },
            {
                "policy_id": "documents",
                "policy_version": "2026-11-23",
                "rule": "owner-or-admin-edits",
                "effect": "allow",
                "matched": false,
                "outcome": "action not listed"
            }
        ]),
        "{e:#}"
    );
    assert_eq!(
        e["derived_roles"],
        json!([{
            "name": "owner",
            "active": true,
            "condition": {"expression": "resource.owner == principal.sub", "result": true}
        }])
    );

    // A deny explained: no role, and the derived role's condition is false.
    let d = ok_json(
        authz
            .post(
                &format!("{AUTHORIZE}?explain=1"),
                &ask("bob", &["editor"], "edit", office_hours()),
            )
            .await,
    )
    .await;
    assert_eq!(d["allow"], false);
    let rules = d["explanation"]["rules"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let outcomes: Vec<(&str, &str, bool)> = rules
        .iter()
        .map(|r| {
            (
                r["rule"].as_str().unwrap_or_default(),
                r["outcome"].as_str().unwrap_or_default(),
                r["matched"].as_bool().unwrap_or(true),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("outside-hours-outside-office", "condition false", false),
            ("editors-and-owners-view", "action not listed", false),
            ("owner-or-admin-edits", "no matching role", false),
        ]
    );
    assert_eq!(
        d["explanation"]["derived_roles"],
        json!([{
            "name": "owner",
            "active": false,
            "condition": {"expression": "resource.owner == principal.sub", "result": false}
        }])
    );

    // A role from the token, not a derived one: no derived role is evaluated.
    let d = ok_json(
        authz
            .post(
                &format!("{AUTHORIZE}?explain=true"),
                &ask("bob", &["editor"], "view", office_hours()),
            )
            .await,
    )
    .await;
    assert_eq!(d["explanation"]["rules"][1]["role"], "editor");
    assert_eq!(d["explanation"]["rules"][1]["matched"], true);
    assert_eq!(d["explanation"]["derived_roles"], json!([]));

    // At night the deny matched, and the explanation still shows the allow it overrode.
    let d = ok_json(
        authz
            .post(
                &format!("{AUTHORIZE}?explain=true"),
                &ask("alice", &[], "view", night()),
            )
            .await,
    )
    .await;
    assert_eq!(d["allow"], false);
    let rules = &d["explanation"]["rules"];
    assert_eq!(rules[0]["matched"], true);
    assert_eq!(rules[0]["outcome"], "applies");
    assert_eq!(rules[0]["condition"]["result"], true);
    assert_eq!(rules[0]["condition"]["of"][1]["result"], false);
    assert_eq!(rules[1]["rule"], "editors-and-owners-view");
    assert_eq!(rules[1]["matched"], true);

    // explain=false is the default answer.
    let d = ok_json(
        authz
            .post(
                &format!("{AUTHORIZE}?explain=false"),
                &ask("bob", &["editor"], "view", office_hours()),
            )
            .await,
    )
    .await;
    assert!(d.get("explanation").is_none(), "{d}");

    // Query parameters are checked, not ignored.
    let message = invalid(
        authz
            .post(
                &format!("{AUTHORIZE}?explain=maybe"),
                &ask("bob", &["editor"], "view", office_hours()),
            )
            .await,
        "explain",
    )
    .await;
    assert!(message.contains("maybe"), "{message}");
    let message = invalid(
        authz
            .post(
                &format!("{AUTHORIZE}?verbose=true"),
                &ask("bob", &["editor"], "view", office_hours()),
            )
            .await,
        "verbose",
    )
    .await;
    assert!(message.contains("unknown query parameter"), "{message}");
    invalid(
        authz
            .post(
                &format!("{BATCH}?explain=yes"),
                &json!({"principal": {"sub": "bob"}, "checks": [{"resource": {"type": "document"}, "action": "view"}]}),
            )
            .await,
        "explain",
    )
    .await;
}

#[tokio::test]
async fn batch_answers_each_check_in_order_like_single_calls() {
    let authz = Authz::standard();
    let principal = json!({"sub": "bob", "roles": ["editor"]});
    let checks = json!([
        {"resource": {"type": "document", "id": "d1", "owner": "alice"}, "action": "view"},
        {"resource": {"type": "document", "id": "d1", "owner": "alice"}, "action": "edit"},
        {"resource": {"type": "invoice", "id": "i1"}, "action": "view"},
        {"resource": {"type": "document", "id": "d2", "owner": "bob"}, "action": "delete"},
    ]);
    let answer = ok_json(
        authz
            .post(
                BATCH,
                &json!({"principal": principal, "context": office_hours(), "checks": checks}),
            )
            .await,
    )
    .await;
    let results = answer["results"].as_array().cloned().unwrap_or_default();
    assert_eq!(results.len(), 4, "{answer}");
    let mut ids = HashSet::new();
    for (result, check) in results.iter().zip(checks.as_array().into_iter().flatten()) {
        assert_eq!(
            result["resource"],
            json!({"type": check["resource"]["type"], "id": check["resource"]["id"]})
        );
        assert_eq!(result["action"], check["action"]);
        assert!(ids.insert(decision_id(result)));
        let single = authz
            .authorize(&json!({
                "principal": principal,
                "resource": check["resource"],
                "action": check["action"],
                "context": office_hours(),
            }))
            .await;
        assert_eq!(verdict(result), verdict(&single), "{check}");
        assert!(ids.insert(decision_id(&single)));
    }
    let allowed: Vec<bool> = results.iter().map(|r| r["allow"] == true).collect();
    assert_eq!(allowed, [true, false, false, true]);
    assert_eq!(results[0]["rule"], "editors-and-owners-view");
    assert_eq!(
        results[2]["reason"],
        r#"no policy covers resource type "invoice""#
    );
    assert_eq!(results[3]["rule"], "owner-or-admin-edits");

    // With explain, every result carries its own explanation.
    let answer = ok_json(
        authz
            .post(
                &format!("{BATCH}?explain=true"),
                &json!({"principal": principal, "context": office_hours(), "checks": checks}),
            )
            .await,
    )
    .await;
    for r in answer["results"].as_array().into_iter().flatten() {
        assert!(r["explanation"]["rules"].is_array(), "{r}");
    }

    // The batch's own limits and shape.
    let with_checks = |checks: Value| json!({"principal": principal, "checks": checks});
    let one = json!({"resource": {"type": "document", "id": "d1"}, "action": "view"});
    let message = invalid(authz.post(BATCH, &with_checks(json!([]))).await, "checks").await;
    assert_eq!(message, "must list at least one check");
    let message = invalid(
        authz
            .post(BATCH, &with_checks(json!(vec![one.clone(); 6])))
            .await,
        "checks",
    )
    .await;
    assert_eq!(message, "6 checks, at most 5 per batch");
    let answer = ok_json(
        authz
            .post(BATCH, &with_checks(json!(vec![one.clone(); 5])))
            .await,
    )
    .await;
    assert_eq!(answer["results"].as_array().map(Vec::len), Some(5));

    let bad = |i: usize, check: Value| {
        let mut checks = vec![one.clone(); 3];
        checks[i] = check;
        with_checks(json!(checks))
    };
    let cases = [
        (
            bad(1, json!({"resource": {"type": "document"}, "action": ""})),
            "checks[1].action",
            "must not be empty",
        ),
        (
            bad(1, json!({"resource": {"type": "document"}, "action": 7})),
            "checks[1].action",
            "invalid type: integer `7`, expected a string",
        ),
        (
            bad(2, json!({"resource": {"type": " "}, "action": "view"})),
            "checks[2].resource.type",
            "must not be empty",
        ),
        (
            bad(
                0,
                json!({"resource": {"type": "document", "kind": "x"}, "action": "view"}),
            ),
            "checks[0].resource.kind",
            "unknown field `kind`",
        ),
        (
            bad(1, json!({"action": "view"})),
            "checks[1].resource",
            "missing field `resource`",
        ),
        (
            json!({"principal": {"sub": ""}, "checks": [one]}),
            "principal.sub",
            "must not be empty",
        ),
        (
            json!({"principal": principal}),
            "checks",
            "missing field `checks`",
        ),
    ];
    for (body, field, expected) in cases {
        let message = invalid(authz.post(BATCH, &body).await, field).await;
        assert!(message.starts_with(expected), "{field}: {message}");
    }
}

#[tokio::test]
async fn malformed_requests_get_400s_naming_the_field_and_never_break_the_service() {
    let authz = Authz::standard();
    let good = ask("bob", &["editor"], "view", office_hours());
    let raw = |v: Value| v.to_string();
    let mut with_roles = good.clone();
    with_roles["principal"]["roles"] = json!(["editor", 1]);
    let mut unknown_top = good.clone();
    unknown_top["subject"] = json!("bob");
    let mut unknown_nested = good.clone();
    unknown_nested["principal"]["role"] = json!(["editor"]);
    let mut empty_sub = good.clone();
    empty_sub["principal"]["sub"] = json!("");
    let mut blank_type = good.clone();
    blank_type["resource"]["type"] = json!("  ");
    let mut blank_action = good.clone();
    blank_action["action"] = json!("");
    let mut action_number = good.clone();
    action_number["action"] = json!(5);
    let mut no_action = good.clone();
    no_action.as_object_mut().map(|o| o.remove("action"));
    let mut no_principal = good.clone();
    no_principal.as_object_mut().map(|o| o.remove("principal"));
    let mut no_sub = good.clone();
    no_sub["principal"] = json!({"roles": ["editor"]});
    let mut bad_ip = good.clone();
    bad_ip["context"]["ip"] = json!("nope");
    let mut bad_time = good.clone();
    bad_time["context"]["time"] = json!("yesterday");
    let mut attributes_list = good.clone();
    attributes_list["resource"]["attributes"] = json!(["a"]);

    let valid = raw(good.clone());
    let cases: Vec<(String, &str, &str)> = vec![
        (
            r#"{"principal":"#.into(),
            "body",
            "EOF while parsing a value",
        ),
        ("not json".into(), "body", "expected ident"),
        // Broken JSON inside a field is still the body's fault, not the field's.
        (
            r#"{"principal":{"sub":tru}}"#.into(),
            "body",
            "expected ident",
        ),
        (
            r#"{"principal":{"sub":"a","roles":["x""#.into(),
            "body",
            "EOF while parsing a list",
        ),
        (String::new(), "body", "EOF while parsing a value"),
        (
            "[]".into(),
            "body",
            "invalid length 0, expected struct Request",
        ),
        (
            r#""view""#.into(),
            "body",
            r#"invalid type: string "view", expected struct Request"#,
        ),
        (format!("{valid} trailing"), "body", "trailing characters"),
        (
            raw(with_roles),
            "principal.roles[1]",
            "invalid type: integer `1`, expected a string",
        ),
        (
            raw(action_number),
            "action",
            "invalid type: integer `5`, expected a string",
        ),
        (raw(no_action), "action", "missing field `action`"),
        (raw(no_principal), "principal", "missing field `principal`"),
        (raw(no_sub), "principal.sub", "missing field `sub`"),
        (raw(unknown_top), "subject", "unknown field `subject`"),
        (
            raw(unknown_nested),
            "principal.role",
            "unknown field `role`",
        ),
        (raw(empty_sub), "principal.sub", "must not be empty"),
        (raw(blank_type), "resource.type", "must not be empty"),
        (raw(blank_action), "action", "must not be empty"),
        (raw(bad_ip), "context.ip", "invalid IP address syntax"),
        (
            raw(bad_time),
            "context.time",
            "input contains invalid characters",
        ),
        (
            raw(attributes_list),
            "resource.attributes",
            "invalid type: sequence, expected a map",
        ),
    ];
    for (body, field, expected) in &cases {
        let message = invalid(authz.post_raw(AUTHORIZE, body.clone()).await, field).await;
        assert!(
            message.starts_with(expected),
            "{body}\n=> {field}: {message}"
        );
        assert!(!message.contains("line 1"), "{message}");
    }
    // Every mistake was counted by the top-level part of its field.
    let metrics = authz.metrics().await;
    for (label, count) in [
        ("body", 8.0),
        ("principal", 5.0),
        ("action", 3.0),
        ("resource", 2.0),
        ("context", 2.0),
        // Names the client made up are not labels: they would grow /metrics without bound.
        ("other", 1.0),
    ] {
        let series = format!(r#"gatehouse_authz_bad_requests_total{{field="{label}"}}"#);
        assert_eq!(support::metric_value(&metrics, &series), count, "{series}");
    }
    // After all of that the service still answers a good question.
    let d = authz.authorize(&good).await;
    assert_eq!(d["allow"], true, "{d}");
    // Context is optional; its other keys are passed through.
    let d = authz
        .authorize(&json!({
            "principal": {"sub": "bob", "roles": ["editor"]},
            "resource": {"type": "document", "id": "d1"},
            "action": "view",
            "context": {"ip": "10.0.0.1", "tenant": "acme"},
        }))
        .await;
    assert!(d["allow"].is_boolean(), "{d}");

    // Methods, paths and sizes.
    let c = client();
    let resp = c.get(authz.url(AUTHORIZE)).send().await.unwrap();
    assert_eq!(resp.headers()["allow"], "POST");
    error_json(resp, 405, "method_not_allowed").await;
    let resp = c.put(authz.url(BATCH)).send().await.unwrap();
    assert_eq!(resp.headers()["allow"], "POST");
    error_json(resp, 405, "method_not_allowed").await;
    let resp = c
        .post(authz.url("/authz/v1/policies"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["allow"], "GET");
    error_json(resp, 405, "method_not_allowed").await;
    for path in [
        "/",
        "/authz/v1/authorize/",
        "/authz/v2/authorize",
        "/metrics",
    ] {
        let resp = c.post(authz.url(path)).json(&good).send().await.unwrap();
        error_json(resp, 404, "not_found").await;
    }
    let resp = c.get(authz.admin("/nope")).send().await.unwrap();
    error_json(resp, 404, "not_found").await;

    // max_body_bytes is 16384: one byte more is refused before it is parsed.
    let padding = "x".repeat(16384);
    let mut big = good.clone();
    big["principal"]["attributes"] = json!({"padding": padding});
    let body = error_json(
        authz.post_raw(AUTHORIZE, big.to_string()).await,
        413,
        "payload_too_large",
    )
    .await;
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("16384"),
        "{body}"
    );
    let mut fits = good.clone();
    fits["principal"]["attributes"] = json!({"padding": "x".repeat(15000)});
    assert!(fits.to_string().len() <= 16384);
    assert_eq!(authz.authorize(&fits).await["allow"], true);
    assert_eq!(authz.authorize(&good).await["allow"], true);
}

#[tokio::test]
async fn policies_lists_the_running_set_and_its_hash_follows_the_files() {
    let authz = Authz::standard();
    let listing = authz.policies().await;
    let hash = listing["hash"].as_str().unwrap_or_default().to_string();
    assert!(
        hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
        "{listing}"
    );
    assert_eq!(listing["version"], hash[..12]);
    assert!(
        listing["directory"]
            .as_str()
            .is_some_and(|d| d.ends_with("policies")),
        "{listing}"
    );
    assert!(listing["loaded_at"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    assert_eq!(
        listing["policies"],
        json!([
            {
                "id": "documents",
                "version": "2026-11-23",
                "resource": "document",
                "file": "documents.yaml",
                "rules": 2,
                "description": "Editors and owners read; owners and admins change."
            },
            {
                "id": "working-hours",
                "version": "2026-11-23",
                "resource": "document",
                "file": "working_hours.yaml",
                "rules": 1,
                "description": "Outside office hours, documents are reachable only from the office network."
            }
        ])
    );
    let health = ok_json(client().get(authz.admin("/healthz")).send().await.unwrap()).await;
    assert_eq!(
        health,
        json!({"status": "ok", "policies": 2, "version": listing["version"]})
    );

    authz.write_policy("documents.yaml", &documents_v2());
    eventually("the edited policy is listed", READY_TIMEOUT, || async {
        authz.policies().await["policies"][0]["version"] == "2026-12-01"
    })
    .await;
    let edited = authz.policies().await;
    let new_hash = edited["hash"].as_str().unwrap_or_default().to_string();
    assert_ne!(new_hash, hash);
    assert_eq!(edited["version"], new_hash[..12]);

    // The hash is over the files' bytes: a comment is a new set too.
    authz.write_policy("documents.yaml", &format!("# reviewed\n{}", documents_v2()));
    eventually("a comment changes the hash", READY_TIMEOUT, || async {
        authz.policies().await["hash"] != new_hash.as_str()
    })
    .await;
    assert_eq!(
        authz.policies().await["policies"][0]["version"],
        "2026-12-01"
    );
}

/// The viewer's question the v2 edit changes the answer to.
fn carol_views() -> Value {
    ask("carol", &["viewer"], "view", office_hours())
}

#[tokio::test]
async fn editing_a_policy_file_reloads_it_and_broken_edits_are_rejected() {
    let authz = Authz::standard();
    let d = authz.authorize(&carol_views()).await;
    assert_eq!(d["allow"], false, "{d}");

    authz.write_policy("documents.yaml", &documents_v2());
    eventually("the edit takes effect", READY_TIMEOUT, || async {
        authz.authorize(&carol_views()).await["allow"] == true
    })
    .await;
    let d = authz.authorize(&carol_views()).await;
    assert_eq!(d["policy_version"], "2026-12-01");
    assert_eq!(d["rule"], "editors-and-owners-view");
    assert!(authz.metric(RELOAD_OK).await >= 1.0);
    let successes = authz.metric(RELOAD_OK).await;
    let running = authz.policies().await["hash"].clone();

    let v2 = documents_v2();
    let broken = [
        (
            "YAML syntax error",
            v2.replace(
                "      effect: allow\n      roles: [admin]",
                "      effect: allow: yes\n      roles: [admin]",
            ),
            "effect: allow: yes",
            "mapping values are not allowed",
        ),
        (
            "CEL that does not compile",
            v2.replace(
                "      roles: [admin]\n      derived_roles: [owner]",
                "      roles: [admin]\n      derived_roles: [owner]\n      when: principal.sub ==",
            ),
            "when: principal.sub ==",
            "resource_policy.rules[1].when: CEL syntax error",
        ),
        (
            "unknown derived role",
            v2.replace(
                "      roles: [admin]\n      derived_roles: [owner]",
                "      roles: [admin]\n      derived_roles: [ownr]",
            ),
            "derived_roles: [ownr]",
            r#"resource_policy.rules[1].derived_roles[0]: unknown derived role "ownr" (imported: owner)"#,
        ),
    ];
    for (what, text, bad_line, problem) in broken {
        assert_ne!(text, v2, "{what}: the edit applies");
        let line = line_of(&text, bad_line);
        let at = format!("documents.yaml:{line}: ");
        let failures = authz.metric(RELOAD_FAILED).await;
        authz.write_policy("documents.yaml", &text);
        eventually(
            &format!("{what}: the reload fails"),
            READY_TIMEOUT,
            || async { authz.metric(RELOAD_FAILED).await > failures },
        )
        .await;
        eventually(
            &format!("{what}: logged with file:line"),
            READY_TIMEOUT,
            || {
                let logged = authz.stderr().lines().any(|l| {
                    l.contains("reload rejected; the running policies stays")
                        && l.contains(&at)
                        && l.contains(problem)
                });
                async move { logged }
            },
        )
        .await;
        // The running set keeps answering as before.
        let d = authz.authorize(&carol_views()).await;
        assert_eq!(d["allow"], true, "{what}: {d}");
        assert_eq!(d["policy_version"], "2026-12-01");
        assert_eq!(authz.policies().await["hash"], running);
        // An explicit reload says why it refuses.
        let failures = authz.metric(RELOAD_FAILED).await;
        let resp = authz.reload().await;
        assert_eq!(resp.status(), 422, "{what}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["result"], "rejected");
        let errors: Vec<&str> = body["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(errors.len(), 1, "{what}: {body}");
        assert!(
            errors[0].contains(&at) && errors[0].contains(problem),
            "{what}: {} should name {at}{problem}",
            errors[0]
        );
        assert!(authz.metric(RELOAD_FAILED).await > failures);
        assert_eq!(authz.metric(RELOAD_OK).await, successes);
    }

    // Fixed: the next save applies.
    let v3 = DOCUMENTS.replace("\"2026-11-23\"", "\"2026-12-02\"");
    authz.write_policy("documents.yaml", &v3);
    eventually("the fixed file applies", READY_TIMEOUT, || async {
        authz.authorize(&carol_views()).await["allow"] == false
    })
    .await;
    let d = authz
        .authorize(&ask("bob", &["editor"], "view", office_hours()))
        .await;
    assert_eq!(d["policy_version"], "2026-12-02");
    assert!(authz.metric(RELOAD_OK).await > successes);
    let resp = authz.reload().await;
    let body = ok_json(resp).await;
    assert_eq!(body["result"], "unchanged");
}

#[tokio::test]
async fn post_reload_and_sighup_reload_changes_the_watcher_cannot_see() {
    // documents.yaml is a symlink to a file outside the watched directory: editing that file
    // is invisible to the watcher, so only an explicit reload picks it up.
    let mut authz = Authz::prepare(
        "",
        &[
            ("derived_roles.yaml", DERIVED_ROLES),
            ("working_hours.yaml", WORKING_HOURS),
        ],
    );
    let target = authz.path("documents.source.yaml");
    support::write(authz.dir.path(), "documents.source.yaml", DOCUMENTS);
    std::os::unix::fs::symlink(&target, authz.policy_dir().join("documents.yaml")).unwrap();
    authz.spawn();
    assert_eq!(authz.authorize(&carol_views()).await["allow"], false);

    // Broken: POST /reload answers 422 with file:line, and nothing changes.
    let broken = documents_v2().replacen("derived_roles: [owner]", "derived_roles: [ownr]", 1);
    let line = line_of(&broken, "derived_roles: [ownr]");
    support::write(authz.dir.path(), "documents.source.yaml", &broken);
    let resp = authz.reload().await;
    assert_eq!(resp.status(), 422);
    let body: Value = resp.json().await.unwrap();
    let expected = format!(
        "{}:{line}: resource_policy.rules[0].derived_roles[0]: unknown derived role \"ownr\" (imported: owner)",
        authz.policy_dir().join("documents.yaml").display()
    );
    assert_eq!(body, json!({"result": "rejected", "errors": [expected]}));
    assert_eq!(authz.metric(RELOAD_FAILED).await, 1.0);
    assert_eq!(authz.authorize(&carol_views()).await["allow"], false);

    // Fixed: POST /reload applies it, and a second one finds nothing new.
    let before = authz.policies().await["version"].clone();
    support::write(authz.dir.path(), "documents.source.yaml", &documents_v2());
    let body = ok_json(authz.reload().await).await;
    assert_eq!(body["result"], "applied", "{body}");
    let after = authz.policies().await["version"].clone();
    assert_ne!(after, before);
    assert_eq!(body["version"], after);
    assert_eq!(authz.authorize(&carol_views()).await["allow"], true);
    assert_eq!(authz.metric(RELOAD_OK).await, 1.0);
    let body = ok_json(authz.reload().await).await;
    assert_eq!(body, json!({"result": "unchanged", "version": after}));
    assert_eq!(authz.metric(RELOAD_OK).await, 1.0);

    // SIGHUP reloads too.
    support::write(authz.dir.path(), "documents.source.yaml", DOCUMENTS);
    authz.hangup();
    eventually("SIGHUP reloads the policies", READY_TIMEOUT, || async {
        authz.authorize(&carol_views()).await["allow"] == false
    })
    .await;
    assert_eq!(authz.metric(RELOAD_OK).await, 2.0);
    assert_eq!(authz.policies().await["version"], before);
}

#[tokio::test]
async fn metrics_count_decisions_by_result_and_policy() {
    let authz = Authz::standard();
    let metrics = authz.metrics().await;
    // Registered before the first event (a labelled series appears with its first sample).
    for line in [
        "# TYPE gatehouse_authz_evaluation_duration_seconds histogram",
        "# TYPE gatehouse_authz_policies gauge",
        "gatehouse_authz_policies 2",
        "gatehouse_authz_decision_log_dropped_total 0",
        "gatehouse_authz_condition_errors_total 0",
        "gatehouse_authz_evaluation_duration_seconds_count 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }

    authz
        .authorize(&ask("bob", &["editor"], "view", office_hours()))
        .await;
    authz
        .authorize(&ask("bob", &["editor"], "edit", office_hours()))
        .await;
    authz.authorize(&ask("alice", &[], "view", night())).await;
    // No IP at night: a condition error, failing closed.
    authz
        .authorize(&ask(
            "alice",
            &[],
            "view",
            json!({"time": "2026-11-23T23:00:00+01:00"}),
        ))
        .await;
    let batch = json!({
        "principal": {"sub": "alice"},
        "context": office_hours(),
        "checks": [
            {"resource": {"type": "document", "id": "d1", "owner": "alice"}, "action": "delete"},
            {"resource": {"type": "invoice", "id": "i1"}, "action": "view"},
        ],
    });
    ok_json(authz.post(BATCH, &batch).await).await;
    invalid(authz.post_raw(AUTHORIZE, "{").await, "body").await;
    invalid(
        authz
            .post(BATCH, &json!({"principal": {"sub": "a"}, "checks": []}))
            .await,
        "checks",
    )
    .await;

    let metrics = authz.metrics().await;
    let value = |series: &str| support::metric_value(&metrics, series);
    assert_eq!(
        value(r#"gatehouse_authz_decisions_total{policy="documents",result="allow"}"#),
        2.0
    );
    assert_eq!(
        value(r#"gatehouse_authz_decisions_total{policy="none",result="deny"}"#),
        2.0
    );
    assert_eq!(
        value(r#"gatehouse_authz_decisions_total{policy="working-hours",result="deny"}"#),
        2.0
    );
    assert_eq!(
        value(r#"gatehouse_authz_decisions_total{policy="documents",result="deny"}"#),
        0.0
    );
    assert_eq!(
        value("gatehouse_authz_evaluation_duration_seconds_count"),
        6.0
    );
    assert_eq!(
        value(r#"gatehouse_authz_evaluation_duration_seconds_bucket{le="+Inf"}"#),
        6.0
    );
    assert!(value("gatehouse_authz_evaluation_duration_seconds_sum") > 0.0);
    assert_eq!(value("gatehouse_authz_condition_errors_total"), 1.0);
    assert_eq!(
        value(r#"gatehouse_authz_bad_requests_total{field="body"}"#),
        1.0
    );
    assert_eq!(
        value(r#"gatehouse_authz_bad_requests_total{field="checks"}"#),
        1.0
    );
    assert_eq!(value("gatehouse_authz_policies"), 2.0);
    assert!(metrics
        .lines()
        .any(|l| l == "gatehouse_authz_decision_log_dropped_total 0"));
}

#[tokio::test]
async fn bad_request_metric_labels_are_bounded_whatever_the_client_sends() {
    let authz = Authz::standard();
    let good = ask("bob", &["editor"], "view", office_hours());
    for i in 0..3 {
        let mut unknown = good.clone();
        unknown[format!("made_up_{i}")] = json!(1);
        invalid(
            authz.post(AUTHORIZE, &unknown).await,
            &format!("made_up_{i}"),
        )
        .await;
        invalid(
            authz.post(&format!("{AUTHORIZE}?param_{i}=1"), &good).await,
            &format!("param_{i}"),
        )
        .await;
    }
    let metrics = authz.metrics().await;
    let labels: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("gatehouse_authz_bad_requests_total{"))
        .collect();
    assert!(
        !metrics.contains("made_up_") && !metrics.contains("param_"),
        "client-chosen names became metric labels: {labels:?}"
    );
    assert_eq!(
        support::metric_value(
            &metrics,
            r#"gatehouse_authz_bad_requests_total{field="other"}"#
        ),
        6.0,
        "{labels:?}"
    );
}

const DECISION_LOG: &str = "decision_log:
  path: decisions.log
  redact:
    - principal.attributes.email
";

#[tokio::test]
async fn each_decision_is_one_json_line_with_secrets_redacted() {
    let authz = Authz::start(DECISION_LOG, &STANDARD_POLICIES);
    let set = authz.policies().await["version"].clone();
    let secret = "alice.private@example.com";
    let alice = json!({
        "sub": "alice",
        "attributes": {"email": secret, "department": "engineering"},
    });
    let first = authz
        .authorize(&json!({
            "principal": alice,
            "resource": {"type": "document", "id": "d1", "owner": "alice", "attributes": {"title": "Plan"}},
            "action": "view",
            "context": {"ip": "203.0.113.9", "time": "2026-11-23T10:00:00+01:00", "tenant": "acme"},
        }))
        .await;
    let second = authz
        .authorize(&ask("bob", &["editor"], "edit", office_hours()))
        .await;
    let batch = ok_json(
        authz
            .post(
                BATCH,
                &json!({
                    "principal": alice,
                    "context": night(),
                    "checks": [
                        {"resource": {"type": "document", "id": "d1", "owner": "alice"}, "action": "view"},
                        {"resource": {"type": "invoice", "id": "i9"}, "action": "pay"},
                    ],
                }),
            )
            .await,
    )
    .await;
    let mut answers = vec![first, second];
    answers.extend(batch["results"].as_array().cloned().unwrap_or_default());

    eventually("four lines in the decision log", READY_TIMEOUT, || {
        // Complete lines only: the writer may be mid-line.
        let n = support::read(&authz.path("decisions.log"))
            .matches('\n')
            .count();
        async move { n >= 4 }
    })
    .await;
    let lines = authz.decision_log("decisions.log");
    assert_eq!(lines.len(), 4);
    for (line, answer) in lines.iter().zip(&answers) {
        assert_eq!(line["decision_id"], answer["decision_id"], "{line}");
        assert_eq!(
            line["result"],
            if answer["allow"] == true {
                "allow"
            } else {
                "deny"
            }
        );
        for key in ["reason", "policy_id", "policy_version", "rule"] {
            assert_eq!(line[key], answer[key], "{key} in {line}");
        }
        assert_eq!(line["policy_set"], set);
        assert!(
            line["latency_us"].as_f64().is_some_and(|l| l >= 0.0),
            "{line}"
        );
        assert!(
            line["time"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{line}"
        );
    }
    assert_eq!(
        lines[0]["input"],
        json!({
            "principal": {
                "sub": "alice",
                "roles": [],
                "attributes": {"email": "[redacted]", "department": "engineering"},
            },
            "resource": {"type": "document", "id": "d1", "owner": "alice", "attributes": {"title": "Plan"}},
            "action": "view",
            "context": {"ip": "203.0.113.9", "time": "2026-11-23T10:00:00+01:00", "tenant": "acme"},
        })
    );
    assert_eq!(lines[0]["rule"], "editors-and-owners-view");
    assert_eq!(lines[1]["input"]["principal"]["sub"], "bob");
    assert_eq!(lines[1]["result"], "deny");
    assert_eq!(lines[1]["policy_id"], Value::Null);
    // The batch's lines carry the batch's principal and context, and each its own check.
    assert_eq!(lines[2]["policy_id"], "working-hours");
    assert_eq!(lines[2]["input"]["context"], night());
    assert_eq!(lines[3]["input"]["resource"]["type"], "invoice");
    assert_eq!(lines[3]["input"]["action"], "pay");
    assert_eq!(
        lines[3]["input"]["principal"]["attributes"]["email"],
        "[redacted]"
    );

    let text = support::read(&authz.path("decisions.log"));
    assert!(!text.contains(secret), "the secret was logged:\n{text}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(authz.path("decisions.log"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn the_decision_log_rotates_by_size_and_keeps_the_configured_files() {
    let authz = Authz::start(
        "decision_log:\n  path: decisions.log\n  max_file_bytes: 4096\n  keep_files: 2\n",
        &STANDARD_POLICIES,
    );
    let checks: Vec<Value> = (0..50)
        .map(|i| json!({"resource": {"type": "document", "id": format!("doc-{i:03}"), "owner": "alice"}, "action": "view"}))
        .collect();
    let mut last = String::new();
    for _ in 0..4 {
        let answer = ok_json(
            authz
                .post(
                    BATCH,
                    &json!({"principal": {"sub": "alice"}, "context": office_hours(), "checks": checks}),
                )
                .await,
        )
        .await;
        last = decision_id(&answer["results"][49]);
        assert!(!authz.path("decisions.log.3").exists());
    }
    eventually("the last decision is written", READY_TIMEOUT, || {
        let written = support::read(&authz.path("decisions.log")).contains(&last);
        async move { written }
    })
    .await;
    let live = authz.decision_log("decisions.log");
    let one = authz.decision_log("decisions.log.1");
    let two = authz.decision_log("decisions.log.2");
    assert!(!one.is_empty() && !two.is_empty());
    assert!(!authz.path("decisions.log.3").exists());
    // Without redaction the input is logged as asked.
    let input = &live.last().expect("a line")["input"];
    assert_eq!(input["principal"]["sub"], "alice");
    assert_eq!(input["resource"]["id"], "doc-049");
    assert_eq!(input["action"], "view");
    assert_eq!(input["context"], office_hours());
    for name in ["decisions.log", "decisions.log.1", "decisions.log.2"] {
        let size = std::fs::metadata(authz.path(name)).unwrap().len();
        assert!(size <= 4096, "{name} is {size} bytes");
    }
    // Oldest first: .2, then .1, then the live file, each in decision order.
    let ids: Vec<String> = two
        .iter()
        .chain(&one)
        .chain(&live)
        .map(|l| l["decision_id"].as_str().unwrap_or_default().to_string())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "lines out of order across rotated files");
    assert_eq!(ids.last(), Some(&last));
    assert_eq!(
        authz
            .metric("gatehouse_authz_decision_log_dropped_total")
            .await,
        0.0
    );
}

#[tokio::test]
async fn a_broken_policy_directory_stops_the_service_from_starting() {
    let broken = DOCUMENTS.replacen("derived_roles: [owner]", "derived_roles: [ownr]", 1);
    let line = line_of(&broken, "derived_roles: [ownr]");
    let mut authz = Authz::prepare(
        "",
        &[
            ("derived_roles.yaml", DERIVED_ROLES),
            ("documents.yaml", &broken),
            ("working_hours.yaml", WORKING_HOURS),
        ],
    );
    let status = authz.run_expecting_exit();
    assert_eq!(status.code(), Some(1), "{}", authz.stderr());
    let stderr = authz.stderr();
    assert!(stderr.contains("policies rejected"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "documents.yaml:{line}: resource_policy.rules[0].derived_roles[0]: unknown derived role \"ownr\""
        )),
        "{stderr}"
    );
    assert!(!support::connects(authz.port));
    assert!(!support::connects(authz.admin_port));
}

#[test]
fn validate_checks_the_config_and_its_policies() {
    let authz = Authz::prepare("", &STANDARD_POLICIES);
    let out = support::validate(&authz.config_path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains(": OK (2 policies in "), "{stdout}");

    let broken = WORKING_HOURS.replace("ipInRange(context.ip", "ipInRange(context.ip,,");
    let line = line_of(&broken, "ipInRange(context.ip,,");
    authz.write_policy("working_hours.yaml", &broken);
    let out = support::validate(&authz.config_path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let expected = format!(
        "{}:{line}: resource_policy.rules[0].when",
        authz.policy_dir().join("working_hours.yaml").display()
    );
    assert!(stdout.contains(&expected), "{expected} in\n{stdout}");
    assert!(stdout.contains("1 problem(s) found"), "{stdout}");

    // Problems in authz.yaml itself name the key.
    support::write(
        authz.dir.path(),
        "authz.yaml",
        "listen: nowhere\nadmin: 127.0.0.1:1\npolicies: policies\n",
    );
    let out = support::validate(&authz.config_path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("authz.yaml: listen: \"nowhere\" is not an address"),
        "{stdout}"
    );
}

/// Two decisions over one TCP connection: answers carry their length, so the connection stays
/// open (without it every decision would pay a new connection).
#[tokio::test]
async fn decisions_keep_the_connection_alive() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let authz = Authz::standard();
    let url = authz.url(AUTHORIZE);
    let addr = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let body = ask("alice", &[], "view", office_hours()).to_string();
    let request = format!(
        "POST {AUTHORIZE} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    for round in 0..2 {
        conn.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        // Read until the whole body announced by Content-Length has arrived.
        loop {
            let n = tokio::time::timeout(READY_TIMEOUT, conn.read(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("no answer in round {round}"))
                .unwrap();
            assert!(
                n > 0,
                "connection closed in round {round}: {}",
                String::from_utf8_lossy(&answer)
            );
            answer.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&answer).to_string();
            if let Some((head, rest)) = text.split_once("\r\n\r\n") {
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or_else(|| panic!("no content-length in {head}"));
                if rest.len() >= length {
                    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
                    assert!(rest.contains("\"allow\":true"), "{rest}");
                    break;
                }
            }
        }
    }
}
