//! The admin API under `/_airlock/` on the proxy's own listener: what the tray, the browser
//! dashboard and the CLI read and drive.
//!
//! Every endpoint but `health` and `sync` needs `Authorization: Bearer <token>`, the token kept in
//! the OS keyring (`airlock admin-token` prints it). The proxy's guard has already refused foreign
//! Host headers and browser origins that are not allowed. The API is described in
//! `docs/admin-api.yaml`.
//!
//! `sync` takes no input and returns nothing: it only applies now what is already committed to the
//! database, which the server would apply within `POLL_INTERVAL` anyway. Leaving it open lets the
//! CLI call it after every change without reading the admin token from the keyring and handing it
//! to whatever happens to listen on the configured port.

mod api;
pub mod events;
pub mod metrics;

use crate::config::Config;
use crate::proxy::body::ProxyBody;
use crate::proxy::state::State;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use secrecy::ExposeSecret;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Serves one admin request.
pub async fn handle(
    state: &Arc<State>,
    config: &Config,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let path = req
        .uri()
        .path()
        .trim_start_matches("/_airlock/")
        .trim_end_matches('/')
        .to_owned();
    if path == "health" {
        return api::json(
            StatusCode::OK,
            &serde_json::json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}),
        );
    }
    if path == "sync" && req.method() == http::Method::POST {
        return api::sync(state).await;
    }
    match authorize(state, &req).await {
        Ok(()) => api::route(state, config, req, &path).await,
        Err(resp) => resp,
    }
}

async fn authorize(state: &State, req: &Request<Incoming>) -> Result<(), Response<ProxyBody>> {
    let presented = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let Some(presented) = presented else {
        return Err(api::error(
            StatusCode::UNAUTHORIZED,
            "airlock_admin_unauthorized",
            "the admin API needs `Authorization: Bearer <token>`; `airlock admin-token` prints the token",
        ));
    };
    let token = state.admin_token().await.map_err(|e| {
        api::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "airlock_admin_token_unavailable",
            &format!("cannot read the admin token: {e}"),
        )
    })?;
    let expected = token.expose_secret().as_bytes();
    if presented.len() == expected.len() && bool::from(presented.as_bytes().ct_eq(expected)) {
        Ok(())
    } else {
        Err(api::error(
            StatusCode::UNAUTHORIZED,
            "airlock_admin_unauthorized",
            "wrong admin token",
        ))
    }
}
