//! Lists narrowed by label and field selectors, and read in pages.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams};

use crate::common::server::TestServer;
use crate::support::{api_error, assert_status, config_map};

kube_api!(
    label_selector_with_set_based_terms,
    field_selector_on_name,
    limit_and_continue_page_through_everything,
    bad_label_selector_is_bad_request,
    metadata_only_list_and_get,
);

/// Creates ConfigMaps named by `labelled` with those labels.
async fn create_all(api: &Api<ConfigMap>, labelled: &[(&str, &[(&str, &str)])]) {
    for (name, labels) in labelled {
        api.create(&PostParams::default(), &config_map(name, &[], labels))
            .await
            .unwrap();
    }
}

async fn names(api: &Api<ConfigMap>, params: &ListParams) -> Vec<String> {
    let list = api.list(params).await.unwrap();
    let mut names: Vec<_> = list
        .iter()
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    names.sort();
    names
}

async fn label_selector_with_set_based_terms(server: &TestServer) {
    let api: Api<ConfigMap> = Api::namespaced(server.client.clone(), "default");
    create_all(
        &api,
        &[
            ("web-a", &[("app", "web"), ("tier", "a")]),
            ("web-b", &[("app", "web"), ("tier", "b")]),
            ("web-c", &[("app", "web"), ("tier", "c")]),
            ("web-none", &[("app", "web")]),
            ("db-a", &[("app", "db"), ("tier", "a")]),
        ],
    )
    .await;
    let selected = names(&api, &ListParams::default().labels("app=web,tier in (a,b)")).await;
    assert_eq!(selected, ["web-a", "web-b"]);
    let selected = names(&api, &ListParams::default().labels("app=web,!tier")).await;
    assert_eq!(selected, ["web-none"]);
    let selected = names(&api, &ListParams::default().labels("tier notin (a),app")).await;
    assert_eq!(selected, ["web-b", "web-c", "web-none"]);
}

async fn field_selector_on_name(server: &TestServer) {
    let api: Api<ConfigMap> = Api::namespaced(server.client.clone(), "default");
    create_all(&api, &[("x", &[]), ("y", &[]), ("z", &[])]).await;
    assert_eq!(
        names(&api, &ListParams::default().fields("metadata.name=x")).await,
        ["x"]
    );
    assert_eq!(
        names(&api, &ListParams::default().fields("metadata.name!=x")).await,
        ["y", "z"]
    );
    let everywhere: Api<ConfigMap> = Api::all(server.client.clone());
    assert_eq!(
        names(
            &everywhere,
            &ListParams::default().fields("metadata.namespace=default,metadata.name=y")
        )
        .await,
        ["y"]
    );
}

async fn limit_and_continue_page_through_everything(server: &TestServer) {
    let api: Api<ConfigMap> = Api::namespaced(server.client.clone(), "default");
    create_all(
        &api,
        &[
            ("p1", &[]),
            ("p2", &[]),
            ("p3", &[]),
            ("p4", &[]),
            ("p5", &[]),
        ],
    )
    .await;
    let mut seen = Vec::new();
    let mut pages = 0;
    let mut params = ListParams::default().limit(2);
    let mut first_version = None;
    let mut uncounted = 0;
    loop {
        let page = api.list(&params).await.unwrap();
        // The count is exact only when nothing was committed while counting; the server's
        // own controllers (bundled manifests, membership) write now and then: list again.
        if first_version.is_none() && page.metadata.remaining_item_count.is_none() && uncounted < 20
        {
            uncounted += 1;
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        }
        pages += 1;
        assert!(page.items.len() <= 2, "a page holds at most `limit` items");
        seen.extend(page.iter().filter_map(|c| c.metadata.name.clone()));
        if first_version.is_none() {
            first_version = page.metadata.resource_version.clone();
            assert_eq!(
                page.metadata.remaining_item_count,
                Some(3),
                "the first page counts what remains"
            );
        }
        // A write between pages must not show up: every page is read at the first's revision.
        if pages == 1 {
            create_all(&api, &[("p6-late", &[])]).await;
        }
        match page.metadata.continue_.filter(|token| !token.is_empty()) {
            Some(token) => params = ListParams::default().limit(2).continue_token(&token),
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ["p1", "p2", "p3", "p4", "p5"]);
}

async fn bad_label_selector_is_bad_request(server: &TestServer) {
    let api: Api<ConfigMap> = Api::namespaced(server.client.clone(), "default");
    let status = api_error(api.list(&ListParams::default().labels("app in (web")).await);
    assert_status(&status, 400, "BadRequest");
    let status = api_error(api.list(&ListParams::default().fields("spec.nope=x")).await);
    assert_eq!(status.code, 400, "an unsupported field label: {status:?}");
}

async fn metadata_only_list_and_get(server: &TestServer) {
    let api: Api<ConfigMap> = Api::namespaced(server.client.clone(), "default");
    api.create(
        &PostParams::default(),
        &config_map("meta", &[("secret-ish", "payload")], &[("app", "web")]),
    )
    .await
    .unwrap();
    // kube-rs asks for PartialObjectMetadata(List) through the Accept header.
    let list = api.list_metadata(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    let item = &list.items[0];
    assert_eq!(item.metadata.name.as_deref(), Some("meta"));
    assert_eq!(
        item.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("app"))
            .map(String::as_str),
        Some("web")
    );
    let types = item.types.as_ref().expect("items carry their type");
    assert_eq!(types.kind, "PartialObjectMetadata");
    let one = api.get_metadata("meta").await.unwrap();
    assert_eq!(one.metadata.uid, item.metadata.uid);
}
