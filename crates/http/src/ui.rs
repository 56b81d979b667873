//! The web UI: files embedded at build time (see `build.rs`), served at `/` (the page)
//! and `/ui/...` (its scripts and styles), with an ETag so a browser revalidates rather
//! than downloads again, and headers that keep the page from running anything but its
//! own scripts or being framed by another site.

use axum::extract::Path;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// One embedded file.
pub struct Asset {
    /// Its path under `ui/`.
    pub path: &'static str,
    pub content_type: &'static str,
    pub etag: &'static str,
    pub body: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/ui_assets.rs"));

/// Scripts, styles and requests only from this origin; no inline script, no framing.
const POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
    form-action 'self'; object-src 'none'";

fn asset(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|asset| asset.path == path)
}

fn serve(asset: &'static Asset, request: &HeaderMap) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(ETAG, HeaderValue::from_static(asset.etag));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    let fresh = request
        .get(IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|tag| tag.trim() == asset.etag));
    if fresh {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    (StatusCode::OK, headers, asset.body).into_response()
}

/// `/`: the page.
pub async fn index(request: HeaderMap) -> Response {
    match asset("index.html") {
        Some(page) => serve(page, &request),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// `/ui/{path}`: a script, style or image of the page.
pub async fn file(Path(path): Path<String>, request: HeaderMap) -> Response {
    match asset(&path) {
        Some(found) if path != "index.html" => serve(found, &request),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_its_entry_script_are_embedded() {
        let page = asset("index.html").expect("index.html");
        assert!(page.content_type.starts_with("text/html"));
        let text = std::str::from_utf8(page.body).unwrap();
        assert!(text.contains("/ui/js/main.js"), "the page loads its script");
        assert!(asset("js/main.js").is_some());
        assert!(ASSETS
            .iter()
            .all(|a| a.etag.starts_with('"') && a.etag.len() == 18));
    }

    #[test]
    fn every_file_the_page_names_is_embedded() {
        let page = std::str::from_utf8(asset("index.html").unwrap().body).unwrap();
        let named: Vec<&str> = ["href=\"/ui/", "src=\"/ui/"]
            .iter()
            .flat_map(|attribute| page.split(attribute).skip(1))
            .filter_map(|rest| rest.split('"').next())
            .collect();
        assert!(named.len() >= 4, "{named:?}");
        for path in named {
            assert!(
                asset(path).is_some(),
                "index.html names {path}, which is not embedded"
            );
        }
    }

    #[test]
    fn an_etag_the_browser_has_is_not_sent_again() {
        let page = asset("index.html").unwrap();
        let mut request = HeaderMap::new();
        request.insert(IF_NONE_MATCH, HeaderValue::from_static(page.etag));
        assert_eq!(serve(page, &request).status(), StatusCode::NOT_MODIFIED);
        let fresh = serve(page, &HeaderMap::new());
        assert_eq!(fresh.status(), StatusCode::OK);
        assert!(fresh.headers().contains_key(CONTENT_SECURITY_POLICY));
    }
}
