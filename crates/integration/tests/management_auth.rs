//! The management API's logins and tags, as RabbitMQ's: basic auth against the broker's
//! users, 401 with RabbitMQ's two spellings, and what each tag may see and change.

mod common;

use common::*;
use serde_json::json;
use wharf_integration::management::{segment, Management};
use wharf_integration::start_broker_with_management;

/// A user with `tags`, and permissions on `vhost` when given; their password is their name.
async fn user(api: &Management, tags: &str, vhost: Option<&str>) -> String {
    let name = unique("http-user");
    api.put(
        &format!("/api/users/{name}"),
        json!({"password": name, "tags": tags}),
    )
    .await
    .expect(201);
    if let Some(vhost) = vhost {
        api.put(
            &format!("/api/permissions/{}/{name}", segment(vhost)),
            json!({"configure": ".*", "write": ".*", "read": ".*"}),
        )
        .await
        .expect(201);
    }
    name
}

async fn vhost(api: &Management) -> String {
    let name = unique("http-vhost");
    api.put(&format!("/api/vhosts/{name}"), json!({}))
        .await
        .expect(201);
    name
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_checked_and_refused_as_rabbitmq_refuses_them() {
    let broker = start_broker_with_management().await;
    let api = Management::of(&broker);
    // No credentials: 401, an empty body, and the realm to ask for.
    let anonymous = api.as_user(None).get("/api/overview").await;
    assert_eq!(anonymous.status(), 401);
    assert!(anonymous.body.is_null(), "{}", anonymous.body);
    assert_eq!(
        anonymous.headers["www-authenticate"],
        "Basic realm=\"RabbitMQ Management\""
    );
    let wrong = api
        .as_user(Some(("guest", "wrong")))
        .get("/api/overview")
        .await;
    assert_eq!(wrong.refused(401, "not_authorized"), "Login failed");
    let nobody = api
        .as_user(Some(("nobody-at-all", "x")))
        .get("/api/whoami")
        .await;
    assert_eq!(nobody.refused(401, "not_authorized"), "Login failed");
    // A user without a management tag cannot log in to the API.
    let untagged = user(&api, "", None).await;
    let answer = api
        .as_user(Some((&untagged, &untagged)))
        .get("/api/overview")
        .await;
    assert_eq!(answer.refused(401, "not_authorised"), "Not management user");
    let me = api.get("/api/whoami").await.expect(200);
    assert_eq!(me["name"], "guest");
    assert_eq!(me["tags"], json!(["administrator"]));
    api.delete(&format!("/api/users/{untagged}"))
        .await
        .expect(204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tag_grants_what_it_grants_in_rabbitmq() {
    let broker = start_broker_with_management().await;
    let api = Management::of(&broker);
    let mine = vhost(&api).await;
    let other = vhost(&api).await;
    let theirs_queue = unique("theirs");
    api.put(
        &format!("/api/queues/{other}/{theirs_queue}"),
        json!({"durable": false}),
    )
    .await
    .expect(201);
    let management = user(&api, "management", Some(&mine)).await;
    let monitoring = user(&api, "monitoring", Some(&mine)).await;
    let policymaker = user(&api, "policymaker", Some(&mine)).await;
    let as_ = |name: &str| api.as_user(Some((name, name)));

    // Administrators only: users, permissions, definitions, one vhost's details.
    for name in [&management, &monitoring, &policymaker] {
        for path in ["/api/users", "/api/permissions", "/api/definitions"] {
            let reason = as_(name).get(path).await.refused(401, "not_authorised");
            assert_eq!(reason, "Not administrator user", "{name} {path}");
        }
        let reason = as_(name)
            .get(&format!("/api/vhosts/{mine}"))
            .await
            .refused(401, "not_authorised");
        assert_eq!(reason, "Not administrator user");
        let delete = as_(name).delete(&format!("/api/users/{management}")).await;
        assert_eq!(
            delete.refused(401, "not_authorised"),
            "Not administrator user"
        );
    }
    // The node: monitors (and administrators).
    let reason = as_(&management)
        .get("/api/nodes")
        .await
        .refused(401, "not_authorised");
    assert_eq!(reason, "Not monitor user");
    assert_eq!(as_(&monitoring).get("/api/nodes").await.status(), 200);

    // Queues are listed from the vhosts the user has permissions in, a monitor's too
    // (an administrator sees them all); the vhost list shows a monitor every vhost.
    for name in [&management, &monitoring] {
        let queues = as_(name).get("/api/queues").await.expect(200);
        assert!(
            queues
                .as_array()
                .unwrap()
                .iter()
                .all(|q| q["vhost"] == mine.as_str()),
            "{queues}"
        );
    }
    let queues = api.get("/api/queues").await.expect(200);
    assert!(
        queues
            .as_array()
            .unwrap()
            .iter()
            .any(|q| q["name"] == theirs_queue.as_str()),
        "{queues}"
    );
    let names = |vhosts: serde_json::Value| -> Vec<String> {
        vhosts
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap().to_string())
            .collect()
    };
    let listed = names(as_(&management).get("/api/vhosts").await.expect(200));
    assert_eq!(listed, std::slice::from_ref(&mine));
    let listed = names(as_(&monitoring).get("/api/vhosts").await.expect(200));
    assert!(listed.contains(&other), "{listed:?}");
    // A vhost it has no permissions in is not its to read, monitor or not.
    for name in [&management, &monitoring] {
        let reason = as_(name)
            .get(&format!("/api/queues/{other}"))
            .await
            .refused(401, "not_authorised");
        assert_eq!(reason, "User not authorised to access virtual host");
    }

    // Queues may be declared where the user has permissions; policies by policymakers.
    let queue = unique("declared");
    as_(&management)
        .put(&format!("/api/queues/{mine}/{queue}"), json!({}))
        .await
        .expect(201);
    let policy = json!({"pattern": "^nothing$", "definition": {"max-length": 1}});
    let reason = as_(&management)
        .put(&format!("/api/policies/{mine}/p"), policy.clone())
        .await
        .refused(401, "not_authorised");
    assert_eq!(reason, "User not authorised to access object");
    as_(&policymaker)
        .put(&format!("/api/policies/{mine}/p"), policy)
        .await
        .expect(201);
    assert_eq!(
        as_(&management)
            .get(&format!("/api/policies/{mine}"))
            .await
            .expect(200)[0]["name"],
        "p"
    );

    for name in [&management, &monitoring, &policymaker] {
        api.delete(&format!("/api/users/{name}")).await.expect(204);
    }
    for name in [&mine, &other] {
        api.delete(&format!("/api/vhosts/{name}")).await.expect(204);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loopback_only_user_logs_in_from_loopback() {
    // guest is kept to loopback (RabbitMQ's loopback_users); the test client is on it.
    let broker = start_broker_with_management().await;
    let api = Management::of(&broker);
    assert_eq!(api.get("/api/overview").await.status(), 200);
}
