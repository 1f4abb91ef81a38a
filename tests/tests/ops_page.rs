//! `GET /ops` serves the operators' job dashboard: one self-contained HTML
//! page (no external assets: operators' networks may have no internet) that
//! talks to `/graphql` only.

use tests::TestEnv;

#[tokio::test]
async fn get_ops_serves_the_self_contained_dashboard() {
    let env = TestEnv::sqlite();
    let server = api::server::start(env.config.clone())
        .await
        .expect("server starts");
    let response = reqwest::get(format!("http://{}/ops", server.addr))
        .await
        .expect("GET /ops");
    assert_eq!(response.status().as_u16(), 200);
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    assert!(
        header("content-type").starts_with("text/html"),
        "{}",
        header("content-type")
    );
    let csp = header("content-security-policy");
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    assert_eq!(header("cache-control"), "no-store");
    let page = response.text().await.expect("body");
    assert!(
        page.contains(&format!("<title>{}</title>", api::http::ops::TITLE)),
        "title"
    );
    assert_eq!(api::http::ops::TITLE, "Valora Operations · Jobs");
    for needed in [
        "sessionStorage",
        "\"/graphql\"",
        "Bearer ",
        "retryJob",
        "discardJob",
        "lastError",
    ] {
        assert!(page.contains(needed), "the page uses {needed}");
    }
    for external in ["http://", "https://", "<link", "<script src", "@import"] {
        assert!(!page.contains(external), "no external asset ({external})");
    }
    server.stop().await.expect("server stops");
    env.cleanup().await;
}
