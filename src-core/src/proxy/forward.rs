//! `forward`: the upstream HTTP client and the request it sends.
//!
//! One pooled hyper-util client with rustls (webpki roots, the system's roots, and an optional
//! extra CA file), HTTP/1.1 and HTTP/2 chosen by ALPN, TCP_NODELAY, and a connect timeout.
//! Headers are copied from the client minus hop-by-hop headers, every header that can carry a
//! client key, and browser-only headers; the real key is added in the provider's auth style.

use crate::config::{Config, Provider};
use crate::providers::{AuthStyle, CLIENT_KEY_HEADERS};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;
use std::time::Duration;

pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientSetupError {
    #[error("cannot read upstream_ca_file {path}: {detail}")]
    CaFile { path: String, detail: String },
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
}

/// Builds the pooled upstream client for `config`.
pub fn build_client(config: &Config) -> Result<UpstreamClient, ClientSetupError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let native = rustls_native_certs::load_native_certs();
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(added, ignored, "system root certificates");
    if let Some(path) = &config.upstream_ca_file {
        let fail = |detail: String| ClientSetupError::CaFile {
            path: path.display().to_string(),
            detail,
        };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| fail(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| fail(e.to_string()))?;
        if certs.is_empty() {
            return Err(fail("no PEM certificates in the file".into()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| fail(e.to_string()))?;
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();

    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(config.timeouts.connect));
    http.set_keepalive(Some(Duration::from_secs(60)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(https))
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) are about one connection and never forwarded.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop headers, including any the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

/// The upstream URI: provider base + the path after the prefix + the query (minus `key=`).
pub fn upstream_uri(
    provider: &Provider,
    rest: &str,
    query: Option<&str>,
) -> Result<http::Uri, http::Error> {
    let base = &provider.upstream;
    let base_path = base.path().trim_end_matches('/');
    let mut path_and_query = String::with_capacity(base_path.len() + rest.len() + 16);
    path_and_query.push_str(base_path);
    path_and_query.push_str(if rest.is_empty() { "/" } else { rest });
    if let Some(q) = query
        .map(crate::providers::query_without_key)
        .filter(|q| !q.is_empty())
    {
        path_and_query.push('?');
        path_and_query.push_str(&q);
    }
    let mut parts = http::uri::Parts::default();
    parts.scheme = base.scheme().cloned();
    parts.authority = base.authority().cloned();
    parts.path_and_query = Some(path_and_query.parse()?);
    Ok(http::Uri::from_parts(parts)?)
}

/// What key to put on the upstream request.
pub enum UpstreamAuth<'a> {
    /// The real key from the keyring, in the provider's style.
    Real(&'a SecretString),
    /// `passthrough`: leave the client's own key header as it was.
    ClientKey,
    /// A provider that needs no key.
    None,
}

/// Rewrites client headers into upstream headers.
pub fn upstream_headers(
    client: &HeaderMap,
    provider: &Provider,
    auth: UpstreamAuth<'_>,
) -> HeaderMap {
    let mut h = client.clone();
    strip_hop_by_hop(&mut h);
    for name in [
        header::HOST,
        header::CONTENT_LENGTH,
        header::ORIGIN,
        header::REFERER,
        header::COOKIE,
        header::ACCEPT_ENCODING,
    ] {
        h.remove(name);
    }
    h.retain_airlock_free();
    if !matches!(auth, UpstreamAuth::ClientKey) {
        for name in CLIENT_KEY_HEADERS {
            h.remove(name);
        }
    }
    // Inspection and metering read the response, so ask for it uncompressed.
    h.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    if let UpstreamAuth::Real(key) = auth {
        let name = match provider.auth {
            AuthStyle::Bearer => Some(header::AUTHORIZATION),
            AuthStyle::XApiKey => Some(HeaderName::from_static("x-api-key")),
            AuthStyle::XGoogApiKey => Some(HeaderName::from_static("x-goog-api-key")),
            AuthStyle::ApiKey => Some(HeaderName::from_static("api-key")),
            AuthStyle::Query | AuthStyle::None => None,
        };
        if let Some(name) = name {
            let text = if provider.auth == AuthStyle::Bearer {
                format!("Bearer {}", key.expose_secret())
            } else {
                key.expose_secret().to_owned()
            };
            if let Ok(mut v) = HeaderValue::from_str(&text) {
                v.set_sensitive(true);
                h.insert(name, v);
            }
        }
    }
    h
}

trait RetainAirlockFree {
    fn retain_airlock_free(&mut self);
}

impl RetainAirlockFree for HeaderMap {
    /// `x-airlock-*` headers are Airlock's own and never leave the machine.
    fn retain_airlock_free(&mut self) {
        let ours: Vec<HeaderName> = self
            .keys()
            .filter(|k| k.as_str().starts_with("x-airlock-"))
            .cloned()
            .collect();
        for k in ours {
            self.remove(k);
        }
    }
}

/// Appends `key=<real key>` for providers that authenticate by query string.
pub fn with_query_key(uri: http::Uri, key: &SecretString) -> Result<http::Uri, http::Error> {
    let mut parts = uri.into_parts();
    let pq = parts
        .path_and_query
        .as_ref()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let sep = if pq.contains('?') { '&' } else { '?' };
    parts.path_and_query = Some(format!("{pq}{sep}key={}", key.expose_secret()).parse()?);
    Ok(http::Uri::from_parts(parts)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn provider(toml: &str, name: &str) -> Arc<Provider> {
        Config::from_toml(toml, None)
            .expect("config")
            .provider(name)
            .expect("provider")
            .clone()
    }

    #[test]
    fn uri_joins_base_path_rest_and_query_without_key() {
        let p = provider(
            "[providers.groq]\nupstream = \"https://api.groq.com/openai\"",
            "groq",
        );
        let u = upstream_uri(&p, "/v1/chat/completions", Some("a=1&key=alk_x")).expect("uri");
        assert_eq!(
            u.to_string(),
            "https://api.groq.com/openai/v1/chat/completions?a=1"
        );
    }

    #[test]
    fn headers_swap_the_key_and_drop_hop_by_hop() {
        let p = provider("", "anthropic");
        let mut client = HeaderMap::new();
        client.insert("x-api-key", HeaderValue::from_static("alk_client"));
        client.insert(
            "authorization",
            HeaderValue::from_static("Bearer alk_client"),
        );
        client.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-drop-me"),
        );
        client.insert("x-drop-me", HeaderValue::from_static("1"));
        client.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
        client.insert(
            "anthropic-beta",
            HeaderValue::from_static("tools-2024-04-04"),
        );
        client.insert("x-airlock-debug", HeaderValue::from_static("1"));
        client.insert("host", HeaderValue::from_static("127.0.0.1:8787"));
        let real = SecretString::from("real-key-value".to_owned());
        let h = upstream_headers(&client, &p, UpstreamAuth::Real(&real));
        assert_eq!(
            h.get("x-api-key").map(|v| v.as_bytes()),
            Some(&b"real-key-value"[..])
        );
        assert!(h.get("authorization").is_none());
        assert!(h.get("connection").is_none() && h.get("x-drop-me").is_none());
        assert!(h.get("host").is_none() && h.get("x-airlock-debug").is_none());
        assert_eq!(
            h.get("anthropic-version").map(|v| v.as_bytes()),
            Some(&b"2023-06-01"[..])
        );
        assert!(h.get("anthropic-beta").is_some());
    }

    #[test]
    fn passthrough_keeps_the_client_key() {
        let p = provider("", "openai");
        let mut client = HeaderMap::new();
        client.insert(
            "authorization",
            HeaderValue::from_static("Bearer sk-client"),
        );
        let h = upstream_headers(&client, &p, UpstreamAuth::ClientKey);
        assert_eq!(
            h.get("authorization").map(|v| v.as_bytes()),
            Some(&b"Bearer sk-client"[..])
        );
    }
}
